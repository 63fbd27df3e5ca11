//! `oxkeeper bench`: a load generator that speaks the ZooKeeper wire protocol to any compatible server.
