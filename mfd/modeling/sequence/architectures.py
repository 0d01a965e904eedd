"""The names of the sequence architectures, shared by the models (`models`) and their networks (`nets`)."""

AUTOENCODER = "lstm_autoencoder"
CLASSIFIERS: tuple[str, ...] = ("lstm", "gru", "bilstm", "conv1d_bilstm")
ARCHITECTURES: tuple[str, ...] = (AUTOENCODER, *CLASSIFIERS)
