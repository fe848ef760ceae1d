"""The transports: OTLP/HTTP (``http``) and OTLP/gRPC (``grpc``) for traces and logs, the GenAI
log-event receiver (``logs``) and the OTLP response and error shapes both transports answer with
(``responses``). A receiver authenticates, reads the body and hands it to the pipeline's
``export``; it never decodes or stores itself."""
