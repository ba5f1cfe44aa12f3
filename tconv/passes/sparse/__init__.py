"""Weight sparsity passes (`tconv-sparsify`)."""
