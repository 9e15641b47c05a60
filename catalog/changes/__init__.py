"""Change plans: what changed between two states of a project's definitions, how (breaking,
additive, metadata), and whose derived metrics, scores and models it reaches."""
