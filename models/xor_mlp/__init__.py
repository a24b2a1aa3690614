"""The XOR gate study: Keras MLPs trained from many seeds at once."""
