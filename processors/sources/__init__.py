"""Sources of billing events other than producers writing the contract themselves."""
