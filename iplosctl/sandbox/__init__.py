"""The KPR simulator: test PKI, synthetic exports, and (later) the answering register."""
