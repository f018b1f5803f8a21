"""When a request runs: the tier table's rules, admission, the flex lane and the SLO governor."""
