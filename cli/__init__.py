"""The `tally` command line: thin wrappers over catalog/ and feature_repo/."""
