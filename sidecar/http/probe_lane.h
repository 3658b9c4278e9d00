// SPDX-License-Identifier: Apache-2.0
//
// probe_lane.h: a lane of its own on the public port for the kubelet.
//
// Any pod of the cluster can reach the public port. A client that floods it
// with connections fills the kernel's accept queue, and a probe's SYN that
// finds the queue full is dropped: the kubelet retries after a second, its
// 1 s timeout has passed, and a healthy app is restarted. So the kubelet's
// address (the node's, which a pod learns through the downward API's
// `status.hostIP`) gets a listening socket of its own on the same port:
// both sockets join one SO_REUSEPORT group, and a classic BPF program
// attached to the group (SO_ATTACH_REUSEPORT_CBPF, no privilege needed)
// sends a new connection to the probe lane when its source address is one
// of the probe peers, and to the general lane otherwise. Each lane has its
// own accept queue, gate and workers, so no other client can delay a probe
// from the node, whatever it sends.
#ifndef LOOPWATCH_SIDECAR_HTTP_PROBE_LANE_H_
#define LOOPWATCH_SIDECAR_HTTP_PROBE_LANE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace loopwatch {

// An IPv4 or IPv6 address (IPv4-mapped IPv6 addresses are taken as IPv4).
struct PeerAddress {
  int family = 0;        // AF_INET or AF_INET6
  uint8_t bytes[16] = {};  // network order; 4 used for AF_INET

  std::string ToString() const;
  bool operator==(const PeerAddress& o) const;
};

// At most this many probe peers (a node has one or two addresses).
constexpr size_t kMaxProbePeers = 8;

// Parses "10.0.0.5", "10.0.0.5,fd00::5": addresses separated by commas
// (spaces around them are taken). False with *why: "has no address", "has
// an invalid address \"x\"", ... The empty text is an empty list.
bool ParsePeerList(std::string_view text, std::vector<PeerAddress>* out, std::string* why);

// "10.0.0.5,fd00::5".
std::string FormatPeerList(const std::vector<PeerAddress>& peers);

// Attaches the steering program to the SO_REUSEPORT group of `fd`: a
// connection from one of `peers` goes to the group's first socket (index
// 0), any other to the second (index 1). False with *error if the kernel
// refuses it.
bool SteerProbePeers(int fd, const std::vector<PeerAddress>& peers, std::string* error);

}  // namespace loopwatch

#endif  // LOOPWATCH_SIDECAR_HTTP_PROBE_LANE_H_
