"""Running: one run from its guards to its report, the tasks and the processes that do them."""
