"""Planning: the input walked and each folder's plan decided; pure, starts no process."""
