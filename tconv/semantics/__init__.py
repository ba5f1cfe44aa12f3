"""What the IR means, executed directly (no compilation): the numpy
reference executor (the oracle of every test), its backward pass, and the
PyTorch interpreter training runs on. Compiled artifacts run in
`tconv.runtime`.
"""
