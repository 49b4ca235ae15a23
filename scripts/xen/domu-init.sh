#!/bin/busybox sh
# /init of the domU initramfs that pvabi-domu-run builds: runs /payload/run with the arguments
# in /payload/args between marker lines on the console, then powers the domain off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in /modules/*.ko; do
    [ -e "$m" ] && insmod "$m"
done
set --
while IFS= read -r a; do set -- "$@" "$a"; done </payload/args
echo "PVABI-DOMU-BEGIN"
(cd /payload && ./run "$@") 2>&1
echo "PVABI-DOMU-RESULT rc=$?"
poweroff -f
