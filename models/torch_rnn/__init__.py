"""nn.RNN, nn.LSTM, nn.GRU and the hand-written cells as parity classifiers, and their trainer."""
