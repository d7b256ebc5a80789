//! The outbox: a durable priority queue of reports on redb, in the state
//! directory. Owns the outbox file. Never touches the network.
//! (Built in the store-and-forward issue.)
