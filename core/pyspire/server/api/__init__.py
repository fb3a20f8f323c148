"""The server's gRPC APIs (SPIRE's services), their authorization, limits and audit."""
