"""The messages iplosctl exchanges with KPR: MsgHead, AppRec, and their CMS protection."""
