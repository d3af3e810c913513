//! Processes as a fixture server sees them: which of our child processes
//! owns the other end of a connection (read from /proc, Linux only), and
//! pausing and waking a process (SIGSTOP/SIGCONT), as a long GC pause or a
//! frozen VM would.

use std::net::SocketAddr;

use rustix::process::{Pid, Signal, kill_process};

/// The process among `candidates` that holds the TCP socket `peer` → `server`
/// (the client's side of a connection accepted by `server`).
pub fn pid_of_peer(peer: SocketAddr, server: SocketAddr, candidates: &[u32]) -> Option<u32> {
    pid_holding(peer_socket(peer, server)?, candidates)
}

/// The inode of the live client socket `peer` → `server`. A connection is
/// known by it, not by its client port: once a connection closes, the
/// other process may connect from the same port.
pub fn peer_socket(peer: SocketAddr, server: SocketAddr) -> Option<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .find_map(|text| socket_inode(&text, peer.port(), server.port()))
}

/// The process among `candidates` with socket `inode` open.
pub fn pid_holding(inode: u64, candidates: &[u32]) -> Option<u32> {
    let wanted = format!("socket:[{inode}]");
    candidates.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str()))
        })
    })
}

/// The inode of the socket whose local port is `local` and remote port
/// `remote`, from a /proc/net/tcp table. Sockets no process holds any more
/// (TIME_WAIT, inode 0) are skipped: the same ports may be in use again.
fn socket_inode(table: &str, local: u16, remote: u16) -> Option<u64> {
    let port = |address: &str| address.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (l, r, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
        (port(l)? == local && port(r)? == remote).then(|| inode.parse().ok().filter(|&i| i != 0)).flatten()
    })
}

/// SIGSTOP: the process stops where it stands; its clocks keep running.
pub fn pause(pid: u32) -> std::io::Result<()> {
    signal(pid, Signal::STOP)
}

/// SIGCONT.
pub fn wake(pid: u32) -> std::io::Result<()> {
    signal(pid, Signal::CONT)
}

fn signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    let pid = i32::try_from(pid).ok().and_then(Pid::from_raw).ok_or(std::io::ErrorKind::InvalidInput)?;
    kill_process(pid, signal).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_socket_by_its_ports() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 20 4 30 10 -1\n   \
            1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0 20 4 30 10 -1\n";
        assert_eq!(socket_inode(table, 0xC350, 0x1F90), Some(4343));
        assert_eq!(socket_inode(table, 0x1F90, 0xC350), Some(4242));
        assert_eq!(socket_inode(table, 1, 2), None);
        let reused = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:C350 0100007F:1F90 06 00000000:00000000 03:00000F9B 00000000     0        0 0 3 0\n   \
            1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4545 1 0 20 4 30 10 -1\n";
        assert_eq!(
            socket_inode(reused, 0xC350, 0x1F90),
            Some(4545),
            "the TIME_WAIT entry of an old connection is not it"
        );
    }

    /// This process's own client socket is found among the candidates.
    #[test]
    fn finds_this_process_as_the_peer() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = std::net::TcpStream::connect(server.local_addr().expect("addr")).expect("connect");
        let (_accepted, peer) = server.accept().expect("accept");
        let me = std::process::id();
        assert_eq!(pid_of_peer(peer, server.local_addr().expect("addr"), &[1, me]), Some(me));
        drop(client);
    }
}
