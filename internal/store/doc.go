// Package store keeps the state tokend replicas share: fenced token records, refresh locks, short
// notes and the announcement of every write. Memory serves a single replica (and tests); Redis serves
// several replicas on one Redis node, a Redis Cluster or a Sentinel-managed master. Both behave the
// same in every way a caller can observe, which the suite in store/storetest checks.
//
// The stores keep only what they are given: token values, times and generations. App secrets never
// reach this package.
package store
