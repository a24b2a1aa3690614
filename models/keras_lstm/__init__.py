"""The Keras LSTM parity classifier (TensorFlow) and its trainer."""
