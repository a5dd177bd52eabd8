// SPDX-License-Identifier: Apache-2.0

// Package agentpb holds the protobuf messages of the host <-> guest agent
// protocol, generated from agent.proto by `make generate` (protoc-gen-go
// v1.36.12 run through buf's Go CLI; no system protoc).
//
// Trust boundary: values of these types decoded from the wire are
// peer-controlled; package guestagent and its host and guest sub-packages
// validate them before use. This package has no behaviour of its own.
package agentpb
