"""spec_tests: a hypothesis-powered conformance suite for PyTorch DCP storage backends."""
