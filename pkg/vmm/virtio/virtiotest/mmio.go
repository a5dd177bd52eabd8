// SPDX-License-Identifier: Apache-2.0

package virtiotest

import (
	"encoding/binary"
	"fmt"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
)

// Registers is a virtio-mmio register window, as *virtio.MMIO provides.
type Registers interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// ReadReg reads the 32-bit register at offset.
func ReadReg(r Registers, offset uint64) uint32 {
	var b [4]byte
	r.Read(offset, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// WriteReg writes the 32-bit register at offset.
func WriteReg(r Registers, offset uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	r.Write(offset, b[:])
}

// Handshake is what Init negotiates.
type Handshake struct {
	// Features are the feature bits the driver acknowledges; zero means
	// every bit the device offers.
	Features uint64
	// Queues configures queue i from Queues[i]; nil entries and queues
	// beyond the slice are left disabled.
	Queues []*Driver
}

// Init runs the driver initialisation of virtio 1.2 §3.1.1 over MMIO
// (§4.2.3.1): reset, ACKNOWLEDGE, DRIVER, read and acknowledge features,
// FEATURES_OK and read it back, configure and enable each queue, DRIVER_OK.
// It returns the first step that failed.
func Init(r Registers, h Handshake) error {
	if v := ReadReg(r, virtio.MMIOMagicValue); v != virtio.MMIOMagic {
		return fmt.Errorf("virtiotest: magic %#x", v)
	}
	if v := ReadReg(r, virtio.MMIOVersion); v != virtio.MMIOVersionModern {
		return fmt.Errorf("virtiotest: version %d", v)
	}
	WriteReg(r, virtio.MMIOStatus, 0)
	if v := ReadReg(r, virtio.MMIOStatus); v != 0 {
		return fmt.Errorf("virtiotest: status %#x after reset", v)
	}
	status := virtio.StatusAcknowledge
	WriteReg(r, virtio.MMIOStatus, status)
	status |= virtio.StatusDriver
	WriteReg(r, virtio.MMIOStatus, status)

	offered := DeviceFeatures(r)
	features := h.Features
	if features == 0 {
		features = offered
	}
	WriteReg(r, virtio.MMIODriverFeaturesSel, 1)
	WriteReg(r, virtio.MMIODriverFeatures, uint32(features>>32))
	WriteReg(r, virtio.MMIODriverFeaturesSel, 0)
	WriteReg(r, virtio.MMIODriverFeatures, uint32(features))
	status |= virtio.StatusFeaturesOK
	WriteReg(r, virtio.MMIOStatus, status)
	if v := ReadReg(r, virtio.MMIOStatus); v&virtio.StatusFeaturesOK == 0 {
		WriteReg(r, virtio.MMIOStatus, v|virtio.StatusFailed)
		return fmt.Errorf("virtiotest: device refused features %#x (offered %#x)", features, offered)
	}

	for i, q := range h.Queues {
		if q == nil {
			continue
		}
		WriteReg(r, virtio.MMIOQueueSel, uint32(i))
		if ReadReg(r, virtio.MMIOQueueReady) != 0 {
			return fmt.Errorf("virtiotest: queue %d already ready", i)
		}
		if maxSize := ReadReg(r, virtio.MMIOQueueNumMax); maxSize == 0 || uint32(q.Size()) > maxSize {
			return fmt.Errorf("virtiotest: queue %d size %d, device max %d", i, q.Size(), maxSize)
		}
		WriteReg(r, virtio.MMIOQueueNum, uint32(q.Size()))
		write64(r, virtio.MMIOQueueDescLow, uint64(q.DescTable()))
		write64(r, virtio.MMIOQueueDriverLow, uint64(q.AvailRing()))
		write64(r, virtio.MMIOQueueDeviceLow, uint64(q.UsedRing()))
		WriteReg(r, virtio.MMIOQueueReady, 1)
		if ReadReg(r, virtio.MMIOQueueReady) != 1 {
			return fmt.Errorf("virtiotest: queue %d not ready after enabling", i)
		}
	}

	status |= virtio.StatusDriverOK
	WriteReg(r, virtio.MMIOStatus, status)
	if v := ReadReg(r, virtio.MMIOStatus); v != status {
		return fmt.Errorf("virtiotest: status %#x after DRIVER_OK, want %#x", v, status)
	}
	return nil
}

// DeviceFeatures reads both words of the device feature bits.
func DeviceFeatures(r Registers) uint64 {
	WriteReg(r, virtio.MMIODeviceFeaturesSel, 1)
	hi := ReadReg(r, virtio.MMIODeviceFeatures)
	WriteReg(r, virtio.MMIODeviceFeaturesSel, 0)
	lo := ReadReg(r, virtio.MMIODeviceFeatures)
	return uint64(hi)<<32 | uint64(lo)
}

// write64 writes a 64-bit value to a low/high register pair at lowOffset.
func write64(r Registers, lowOffset uint64, v uint64) {
	WriteReg(r, lowOffset, uint32(v))
	WriteReg(r, lowOffset+4, uint32(v>>32))
}

// Kick notifies the device that queue has new available buffers.
func Kick(r Registers, queue int) {
	WriteReg(r, virtio.MMIOQueueNotify, uint32(queue))
}
