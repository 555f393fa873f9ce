-- Scenario 7: every request POSTs a 1 MiB body (wrk adds Content-Length).
wrk.method = "POST"
wrk.body = string.rep("x", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
