"""A generation request's life: prompt preparation, intake (lease, lane, admission) and its one scope."""
