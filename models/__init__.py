"""The model zoo: one folder per engine, each a leaf that never imports ``stages``.

- ``torch_rnn/``: nn.RNN, nn.LSTM, nn.GRU and the hand-written cells, their trainer
  (families rnn_packed, rnn_per_sequence, manual_rnn, manual_rnn_bce, manual_lstm, lstm, gru)
- ``keras_lstm/``: the Keras LSTM and its trainer (family keras_lstm)
- ``rnn_search/``: random weight search of a small tanh RNN (family rnn_search)
- ``xor_mlp/``: the Keras MLPs of the XOR gate study (family xor_mlp)
- ``common.py``: what the trainers share (no framework imported)

This package itself imports nothing; each folder imports its framework when used.
"""
