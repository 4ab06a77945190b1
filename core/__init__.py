"""What every package of the project may import: the user-error base class, the command
runner, and atomic file writing. It imports nothing else of the project."""
