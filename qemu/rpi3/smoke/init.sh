#!/bin/busybox sh
# PID 1 of the phase-1 raspi3b smoke initramfs (busybox-static:arm64).
# Layout: /bin/busybox, /bin/rpi3-smoke, /lib/{uio,uio_pdrv_genirq,bcm2835_wdt}.ko
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev

# No modules.dep in Debian's package: load in dependency order.
insmod /lib/uio.ko
insmod /lib/uio_pdrv_genirq.ko of_id=generic-uio
insmod /lib/bcm2835_wdt.ko   # raspi3b has no power-off; the watchdog makes reboot -f exit QEMU

echo "SMOKE: uname $(uname -r)"
for d in /sys/class/uio/uio*; do
	n=$(basename "$d")
	echo "SMOKE: $n name=$(cat "$d/name") version=$(cat "$d/version") addr=$(cat "$d/maps/map0/addr") size=$(cat "$d/maps/map0/size") event=$(cat "$d/event")"
	[ "$(cat "$d/name")" = reinc-systimer ] && T=$n
done
echo "SMOKE: irq line: $(grep reinc /proc/interrupts)"

# Raw genirq check with busybox only: arm C3 300 ms ahead through /dev/mem
# (the timer's page is claimed by no kernel driver, so IO_STRICT_DEVMEM
# allows it), block in read() on the UIO node, see M3 latched, clear it.
CLO=$(devmem 0x3f003004 32); echo "SMOKE: CLO=$CLO CS=$(devmem 0x3f003000 32)"
devmem 0x3f003018 32 $((CLO + 300000))
echo "SMOKE: waiting on /dev/$T"
dd if=/dev/$T bs=4 count=1 2>/dev/null | hexdump -C | head -1
echo "SMOKE: after irq CS=$(devmem 0x3f003000 32) CLO=$(devmem 0x3f003004 32) event=$(cat /sys/class/uio/$T/event)"
echo "SMOKE: irq line: $(grep reinc /proc/interrupts)"
devmem 0x3f003000 32 8
echo "SMOKE: cleared CS=$(devmem 0x3f003000 32)"

# The cores through the project's UIO layer.
/bin/rpi3-smoke
reboot -f
