//! Everything of oxkeeper that does I/O: listener and connections, the executor that applies committed
//! commands and serves reads, replication through openraft (a one-member cluster when standalone),
//! four-letter words and configuration.
