"""The KPR simulator: a test PKI, synthetic exports, and the answering register
(serve, attach, and embedded in apply/receipts for the sandbox environment)."""
