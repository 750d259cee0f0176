"""Loading causal LMs and describing where their editable parts live."""
