//! A throwaway etcd on loopback (lands with the etcd registry).
