"""Training: losses, tasks and the accelerate loop (imports the networks; the networks never import it)."""
