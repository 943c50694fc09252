"""align: preference optimisation (DPO, IPO, SimPO/ORPO) of the SFT model, offline pairs and on-policy rounds."""
