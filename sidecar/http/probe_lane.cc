// SPDX-License-Identifier: Apache-2.0
#include "http/probe_lane.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

namespace loopwatch {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

bool ParsePeer(std::string_view text, PeerAddress* out) {
  const std::string s(text);
  PeerAddress a;
  if (inet_pton(AF_INET, s.c_str(), a.bytes) == 1) {
    a.family = AF_INET;
  } else if (inet_pton(AF_INET6, s.c_str(), a.bytes) == 1) {
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a.bytes, kMapped, sizeof kMapped) == 0) {
      memmove(a.bytes, a.bytes + 12, 4);
      memset(a.bytes + 4, 0, 12);
      a.family = AF_INET;
    } else {
      a.family = AF_INET6;
    }
  } else {
    return false;
  }
  *out = a;
  return true;
}

uint32_t Word(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

}  // namespace

std::string PeerAddress::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family, bytes, buf, sizeof buf);
  return buf;
}

bool PeerAddress::operator==(const PeerAddress& o) const {
  return family == o.family && memcmp(bytes, o.bytes, sizeof bytes) == 0;
}

bool ParsePeerList(std::string_view text, std::vector<PeerAddress>* out, std::string* why) {
  const char* const form = "expected IP addresses separated by commas, e.g. 10.0.0.5 or "
                           "10.0.0.5,fd00::5 (the node's: status.hostIP)";
  std::vector<PeerAddress> peers;
  if (!Trim(text).empty()) {
    while (true) {
      const size_t comma = text.find(',');
      const std::string_view item = Trim(text.substr(0, comma));
      PeerAddress a;
      if (item.empty()) {
        *why = std::string("has an empty entry; ") + form;
        return false;
      }
      if (!ParsePeer(item, &a)) {
        *why = "has an invalid address \"" + std::string(item) + "\"; " + form;
        return false;
      }
      bool dup = false;
      for (const PeerAddress& p : peers) dup = dup || p == a;
      if (!dup) peers.push_back(a);
      if (comma == std::string_view::npos) break;
      text.remove_prefix(comma + 1);
    }
  }
  if (peers.size() > kMaxProbePeers) {
    *why = "has more than " + std::to_string(kMaxProbePeers) + " addresses; " + form;
    return false;
  }
  *out = std::move(peers);
  return true;
}

std::string FormatPeerList(const std::vector<PeerAddress>& peers) {
  std::string s;
  for (const PeerAddress& p : peers) s += (s.empty() ? "" : ",") + p.ToString();
  return s;
}

namespace {

// A classic BPF program with symbolic jumps: jt/jf name labels, resolved
// once every label's position is known (cBPF jumps are forward and
// relative).
class BpfProgram {
 public:
  static constexpr int kNext = -1;  // fall through

  int NewLabel() {
    at_.push_back(-1);
    return int(at_.size()) - 1;
  }
  void Place(int label) { at_[size_t(label)] = int(code_.size()); }
  void Stmt(uint16_t code, uint32_t k) { code_.push_back({code, k, kNext, kNext}); }
  void Jump(uint16_t code, uint32_t k, int jt, int jf) { code_.push_back({code, k, jt, jf}); }

  // The instructions; false if a jump goes backwards or too far.
  bool Resolve(std::vector<sock_filter>* out) const {
    out->clear();
    for (size_t i = 0; i < code_.size(); i++) {
      const Insn& n = code_[i];
      uint8_t jt = 0, jf = 0;
      if (!Offset(n.jt, i, &jt) || !Offset(n.jf, i, &jf)) return false;
      out->push_back(sock_filter{n.code, jt, jf, n.k});
    }
    return true;
  }

 private:
  struct Insn {
    uint16_t code;
    uint32_t k;
    int jt, jf;
  };
  bool Offset(int label, size_t i, uint8_t* off) const {
    if (label == kNext) return true;
    const int d = at_[size_t(label)] - int(i) - 1;
    if (d < 0 || d > 255) return false;
    *off = uint8_t(d);
    return true;
  }
  std::vector<Insn> code_;
  std::vector<int> at_;
};

}  // namespace

bool SteerProbePeers(int fd, const std::vector<PeerAddress>& peers, std::string* error) {
  // The program sees the packet from its network header (SKF_NET_OFF): the
  // version is ip[0] >> 4, an IPv4 source is at +12, an IPv6 one at +8..+23.
  // It returns the index of the socket in the group: 0 for the probe lane,
  // 1 for every other connection.
  const uint32_t net = uint32_t(SKF_NET_OFF);
  BpfProgram b;
  const int probe = b.NewLabel(), other = b.NewLabel(), ipv6 = b.NewLabel();
  b.Stmt(BPF_LD | BPF_B | BPF_ABS, net);
  b.Stmt(BPF_ALU | BPF_RSH | BPF_K, 4);
  b.Jump(BPF_JMP | BPF_JEQ | BPF_K, 4, BpfProgram::kNext, ipv6);
  b.Stmt(BPF_LD | BPF_W | BPF_ABS, net + 12);
  for (const PeerAddress& a : peers) {
    if (a.family == AF_INET) b.Jump(BPF_JMP | BPF_JEQ | BPF_K, Word(a.bytes), probe, BpfProgram::kNext);
  }
  b.Stmt(BPF_RET | BPF_K, 1);
  b.Place(ipv6);
  for (const PeerAddress& a : peers) {
    if (a.family != AF_INET6) continue;
    const int next = b.NewLabel();
    for (int w = 0; w < 4; w++) {
      b.Stmt(BPF_LD | BPF_W | BPF_ABS, net + 8 + uint32_t(w) * 4);
      b.Jump(BPF_JMP | BPF_JEQ | BPF_K, Word(a.bytes + w * 4), w == 3 ? probe : BpfProgram::kNext,
             next);
    }
    b.Place(next);
  }
  b.Place(other);
  b.Stmt(BPF_RET | BPF_K, 1);
  b.Place(probe);
  b.Stmt(BPF_RET | BPF_K, 0);

  std::vector<sock_filter> code;
  if (!b.Resolve(&code)) {
    *error = "cannot steer the probe peers to their lane: the program is too long";
    return false;
  }
  sock_fprog prog{uint16_t(code.size()), code.data()};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) != 0) {
    *error = std::string("cannot steer the probe peers to their lane: ") + strerror(errno);
    return false;
  }
  return true;
}

}  // namespace loopwatch
