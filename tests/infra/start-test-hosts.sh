#!/bin/bash
# start-test-hosts.sh - N fake "compute hosts" as Linux network namespaces, each running its own sshd
# (key-only auth) on port 22, on a private LAN 10.77.0.0/24 bridged to the root namespace.
#
#   root ns: bridge ckbr0 10.77.0.1/24
#   ns "node$i": eth0 10.77.0.$((10+i))/24, own UTS namespace (hostname node$i), sshd on :22,
#                no default route (nothing can leave the test LAN)
#   node-local storage: $TEST_HOSTS_DIR/node-local is each host's own folder (node$i/local bind-mounted there
#                in the host's own mount namespace), so a path can differ per node as on separate machines,
#                though the hosts share this machine's filesystem
#   a machine's own state: /run, /etc/munge, /var/lib/munge, /var/log/munge, /var/spool/slurmd and
#                /var/log/slurm are node$i/root/... on node$i, so the Slurm role gives each host its own munged,
#                munge key, slurmd and logs, as on separate machines; its own sysfs (its network devices) with
#                this machine's cgroups under it, which slurmd needs
#
# Idempotent. Env: TEST_HOSTS=2, TEST_HOSTS_DIR=/tmp/cockpit-testhosts
# Produces in $TEST_HOSTS_DIR: id_ed25519 (client key), known_hosts, ssh_config, inventory.ini, fake-shutdown,
#   node$i/{sshd_config,ssh_host_ed25519_key,sshd.pid}; node$i has MAC 02:77:00:00:00:<10+i in hex>
# Teardown: stop-test-hosts.sh
# (no `cmd | grep -q` tests here: with pipefail, grep -q closing early makes the pipe "fail")
set -euo pipefail
N=${TEST_HOSTS:-2}
D=${TEST_HOSTS_DIR:-/tmp/cockpit-testhosts}
BR=ckbr0
NET=10.77.0
OWN_DIRS="/run /etc/munge /var/lib/munge /var/log/munge /var/spool/slurmd /var/log/slurm"

command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || {
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; ADDED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server openssh-client iproute2 >/dev/null
  [ "${ADDED:-0}" = 1 ] && rm -f /usr/sbin/policy-rc.d; }
install -d -m 0755 /run/sshd            # sshd privilege-separation dir (systemd would create it)
install -d -m 0700 "$D"
[ -f "$D/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C cockpit-test -f "$D/id_ed25519"
cp "$D/id_ed25519.pub" "$D/authorized_keys"; chmod 600 "$D/authorized_keys"

# ---- root-namespace side: bridge
ip link show $BR >/dev/null 2>&1 || ip link add $BR type bridge
[[ "$(ip addr show dev $BR)" == *" $NET.1/24 "* ]] || ip addr add $NET.1/24 brd $NET.255 dev $BR
ip link set $BR up

: > "$D/known_hosts.new"
for i in $(seq 0 $((N-1))); do
  NS=node$i; IP=$NET.$((10+i)); H=$D/$NS; install -d -m 0700 "$H"; install -d -m 0755 "$H/local" "$D/node-local"
  install -d -m 0755 "$H/cgroup" "$H/root/run/sshd"
  for dir in $OWN_DIRS; do install -d "$dir" "$H/root$dir"; done
  # ---- namespace + veth pair (root end "ck-$NS" on the bridge, namespace end renamed eth0)
  [[ " $(ip netns list | cut -d' ' -f1 | tr '\n' ' ') " == *" $NS "* ]] || ip netns add $NS
  if ! ip link show ck-$NS >/dev/null 2>&1; then
    ip link add ck-$NS type veth peer name ck-$NS-in
    ip link set ck-$NS-in netns $NS
    ip -n $NS link set ck-$NS-in name eth0
    # a fixed, locally administered MAC per node, so inventories and Wake-on-LAN tests can name it
    ip -n $NS link set eth0 address "$(printf '02:77:00:00:00:%02x' $((10+i)))"
  fi
  ip link set ck-$NS master $BR up
  ip -n $NS link set lo up
  [[ "$(ip -n $NS addr show dev eth0)" == *" $IP/24 "* ]] || ip -n $NS addr add $IP/24 brd $NET.255 dev eth0
  ip -n $NS link set eth0 up
  # ---- per-host sshd
  [ -f "$H/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C "$NS" -f "$H/ssh_host_ed25519_key"
  cat > "$H/sshd_config" <<EOF
Port 22
ListenAddress $IP
HostKey $H/ssh_host_ed25519_key
PidFile $H/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AuthorizedKeysFile $D/authorized_keys
Subsystem sftp /usr/lib/openssh/sftp-server
AcceptEnv LANG LC_*
LogLevel INFO
EOF
  /usr/sbin/sshd -t -f "$H/sshd_config"
  if ! { [ -f "$H/sshd.pid" ] && kill -0 "$(cat "$H/sshd.pid")" 2>/dev/null; }; then
    rm -f "$H/sshd.pid"
    # own UTS namespace so `hostname` inside ssh sessions says node$i, own mount namespace for its own folders;
    # nsenter and a sysfs of our own rather than `ip netns exec`, whose fresh /sys hides the cgroups; sshd forks
    nsenter --net=/run/netns/$NS unshare --uts --mount --propagation private -- sh -ec "
      mount --rbind /sys/fs/cgroup '$H/cgroup'; mount -t sysfs sysfs /sys; mount --move '$H/cgroup' /sys/fs/cgroup
      mount --bind '$H/local' '$D/node-local'
      for dir in $OWN_DIRS; do mount --bind '$H/root'\$dir \$dir; done
      hostname $NS
      exec /usr/sbin/sshd -f '$H/sshd_config' -E '$H/sshd.log'"
    for _ in $(seq 1 50); do [ -s "$H/sshd.pid" ] && break; sleep 0.1; done
  fi
  for _ in $(seq 1 50); do (exec 3<>/dev/tcp/$IP/22) 2>/dev/null && break; sleep 0.1; done
  echo "$IP $(cut -d' ' -f1,2 "$H/ssh_host_ed25519_key.pub")" >> "$D/known_hosts.new"
  echo "$NS $(cut -d' ' -f1,2 "$H/ssh_host_ed25519_key.pub")" >> "$D/known_hosts.new"
done
mv "$D/known_hosts.new" "$D/known_hosts"

# ---- a fake `shutdown` for the hosts: they share this machine's kernel, so a real one would power it off
cat > "$D/fake-shutdown" <<'SH'
#!/bin/sh
# fake shutdown (test hosts are namespaces of the CI machine): records the request instead of acting on it
echo "$(hostname) shutdown $*" >> "$(dirname "$0")/power.log"
SH
chmod 0755 "$D/fake-shutdown"

# ---- client side helpers
{ for i in $(seq 0 $((N-1))); do cat <<EOF
Host node$i
  HostName $NET.$((10+i))
EOF
done; cat <<EOF
Host node* $NET.*
  User root
  IdentityFile $D/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $D/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 5
EOF
} > "$D/ssh_config"
{ echo "[compute]"; for i in $(seq 0 $((N-1))); do
  echo "node$i ansible_host=$NET.$((10+i)) ansible_user=root ansible_ssh_private_key_file=$D/id_ed25519" \
       "mac_address=$(printf '02:77:00:00:00:%02x' $((10+i)))"; done
  echo; echo "[compute:vars]"
  echo "ansible_ssh_common_args='-o UserKnownHostsFile=$D/known_hosts -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes'"
  echo "ansible_python_interpreter=/usr/bin/python3"
  echo "power_off_command='$D/fake-shutdown -h now'"
  echo "reboot_command='$D/fake-shutdown -r now'"; } > "$D/inventory.ini"

# ---- verify
for i in $(seq 0 $((N-1))); do
  out=$(ssh -F "$D/ssh_config" node$i hostname)
  [ "$out" = "node$i" ] || { echo "node$i: ssh hostname returned '$out'" >&2; exit 1; }
done
echo "test hosts up: $(for i in $(seq 0 $((N-1))); do printf 'node%s=%s ' $i $NET.$((10+i)); done)(ssh -F $D/ssh_config nodeN)"
