"""Getting spans in: decoding OTLP (JSON lines, protobuf, HTTP), redaction, the ingester
thread that commits batches to the store, the write-ahead spool, inbox tailing and the receiver."""
