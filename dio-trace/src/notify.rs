//! systemd readiness (`Type=notify`): `READY=1` once every probe the
//! verdict needs is attached, so a unit ordered `Before=` a database
//! starts only when its writes will be judged. The protocol is one
//! datagram to `$NOTIFY_SOCKET` (sd_notify(3)); without the variable,
//! nothing is sent.

use std::os::unix::net::UnixDatagram;

/// Is a service manager waiting for our readiness?
pub fn expected() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Send `state` (e.g. "READY=1\nSTATUS=...") to the service manager, if any.
pub fn send(state: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (systemd's default for user managers).
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_datagram_reaches_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        // SAFETY: this test alone reads or writes NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        send("READY=1\nSTATUS=watching").unwrap();
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=watching");
    }
}
