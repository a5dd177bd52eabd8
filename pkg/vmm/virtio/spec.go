// SPDX-License-Identifier: Apache-2.0

package virtio

// DeviceType is a virtio device ID (virtio 1.2 §5).
type DeviceType uint32

// Device IDs used by this project (virtio 1.2 §5, table "Device Types").
const (
	DeviceTypeNet     DeviceType = 1  // §5.1 network card
	DeviceTypeBlock   DeviceType = 2  // §5.2 block device
	DeviceTypeConsole DeviceType = 3  // §5.3 console
	DeviceTypeRNG     DeviceType = 4  // §5.4 entropy source
	DeviceTypeVsock   DeviceType = 19 // §5.10 socket device
	DeviceTypeFS      DeviceType = 26 // §5.11 file system device
)

// Device status bits (virtio 1.2 §2.1).
const (
	// StatusAcknowledge means the guest has noticed the device.
	StatusAcknowledge uint32 = 1
	// StatusDriver means the guest knows how to drive the device.
	StatusDriver uint32 = 2
	// StatusDriverOK means the driver is set up and ready to drive the device.
	StatusDriverOK uint32 = 4
	// StatusFeaturesOK means the driver has acknowledged the features it
	// understands and feature negotiation is complete.
	StatusFeaturesOK uint32 = 8
	// StatusDeviceNeedsReset means the device hit an error it cannot recover from.
	StatusDeviceNeedsReset uint32 = 64
	// StatusFailed means the guest has given up on the device.
	StatusFailed uint32 = 128
)

// Reserved feature bits (virtio 1.2 §6). Bits 0-23 and 50-127 are device
// specific.
const (
	// FeatureIndirectDesc lets the driver use indirect descriptors (§2.7.5.3).
	FeatureIndirectDesc uint64 = 1 << 28
	// FeatureEventIdx enables used_event and avail_event to suppress notifications
	// (§2.7.7, §2.7.10).
	FeatureEventIdx uint64 = 1 << 29
	// FeatureVersion1 says the device complies with virtio 1.0 or later; a
	// modern driver must accept it.
	FeatureVersion1 uint64 = 1 << 32
	// FeatureAccessPlatform says the device is behind an IOMMU.
	FeatureAccessPlatform uint64 = 1 << 33
	// FeatureRingPacked enables packed virtqueues (§2.8); not implemented.
	FeatureRingPacked uint64 = 1 << 34
	// FeatureInOrder says buffers are used in the order they are made available.
	FeatureInOrder uint64 = 1 << 35
	// FeatureOrderPlatform says memory accesses are ordered as the platform says.
	FeatureOrderPlatform uint64 = 1 << 36
	// FeatureSRIOV enables single root I/O virtualisation.
	FeatureSRIOV uint64 = 1 << 37
	// FeatureNotificationData says the driver passes extra data in notifications;
	// not implemented.
	FeatureNotificationData uint64 = 1 << 38
	// FeatureNotifConfigData says the driver uses a device-provided notification
	// value; not implemented.
	FeatureNotifConfigData uint64 = 1 << 39
	// FeatureRingReset says individual queues can be reset; not implemented.
	FeatureRingReset uint64 = 1 << 40
)

// QueueFeatures are the transport-level features this package implements for
// split virtqueues. Devices may OR them into [Device.Features].
const QueueFeatures = FeatureIndirectDesc | FeatureEventIdx

// unsupportedFeatures are never offered, whatever the device says: the
// transport or queue does not implement them.
const unsupportedFeatures = FeatureAccessPlatform | FeatureRingPacked |
	FeatureSRIOV | FeatureNotificationData | FeatureNotifConfigData | FeatureRingReset

// Descriptor flags (virtio 1.2 §2.7.5).
const (
	descFNext     = 1 // VIRTQ_DESC_F_NEXT: the next field is valid
	descFWrite    = 2 // VIRTQ_DESC_F_WRITE: device-writable buffer
	descFIndirect = 4 // VIRTQ_DESC_F_INDIRECT: the buffer is a descriptor table
)

// availFNoInterrupt is VIRTQ_AVAIL_F_NO_INTERRUPT (virtio 1.2 §2.7.6). The
// device never sets VIRTQ_USED_F_NO_NOTIFY: it always wants notifications.
const availFNoInterrupt = 1

// Split virtqueue geometry (virtio 1.2 §2.7).
const (
	// MaxQueueSize is the largest queue size a split virtqueue may have
	// (§2.7: "Queue Size ... maximum 32768").
	MaxQueueSize = 32768

	descSize      = 16           // struct virtq_desc: addr u64, len u32, flags u16, next u16 (§2.7.5)
	usedElemSize  = 8            // struct virtq_used_elem: id u32, len u32 (§2.7.8)
	ringHeader    = 4            // flags u16 + idx u16 at the start of both rings
	descAlign     = 16           // descriptor table alignment (§2.7, table "Alignment")
	availAlign    = 2            // available ring alignment
	usedAlign     = 4            // used ring alignment
	maxIndirectTb = MaxQueueSize // entries in one indirect table we accept
)
