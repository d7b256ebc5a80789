//! The uplink: the MQTT session (rumqttc + rustls) that drains the outbox to
//! the broker and receives pushed config. Owns the broker connection. Never
//! deletes an outbox record that the broker has not acknowledged.
//! (Built in the store-and-forward issue.)
