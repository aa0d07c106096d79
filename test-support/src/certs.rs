//! Test certificates made with `openssl` (on PATH; scripts/test installs
//! it): a CA, and server certificates it signs, valid two days, written as
//! PEM files into the test's temp folder.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl args` in `dir`; panics with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("this test needs openssl on PATH (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA `dir/{stem}.crt` with its key `dir/{stem}.key`,
/// subject `CN={cn}`; returns the certificate's path.
pub fn make_ca(dir: &Path, stem: &str, cn: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{stem}.key"),
            "-out",
            &format!("{stem}.crt"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(format!("{stem}.crt"))
}

/// A server certificate `dir/server.crt` (key `dir/server.key`), subject
/// `CN={cn}`, naming `san` (e.g. `IP:127.0.0.1`, `DNS:localhost`), signed
/// by the CA `dir/{ca_stem}.crt`.
pub fn make_server_cert(dir: &Path, ca_stem: &str, cn: &str, san: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        format!("subjectAltName={san}\nextendedKeyUsage=serverAuth\n"),
    )
    .expect("write server.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca_stem}.crt"),
            "-CAkey",
            &format!("{ca_stem}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

/// What a broker over TLS on 127.0.0.1 needs: the test CA `dir/ca.crt`
/// and a certificate for `IP:127.0.0.1` it signed (`server.crt`,
/// `server.key`). Returns the CA's path, for the clients' `tls_ca_file`.
pub fn broker_certs(dir: &Path) -> PathBuf {
    let ca = make_ca(dir, "ca", "waterworks-test-ca");
    make_server_cert(dir, "ca", "127.0.0.1", "IP:127.0.0.1");
    ca
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_certificate_verifies_against_its_ca_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = broker_certs(d);
        assert!(ca.exists() && d.join("server.key").exists());
        openssl(d, &["verify", "-CAfile", "ca.crt", "server.crt"]);
        make_ca(d, "other", "another test CA");
        let refused = Command::new("openssl")
            .args(["verify", "-CAfile", "other.crt", "server.crt"])
            .current_dir(d)
            .output()
            .unwrap();
        assert!(!refused.status.success(), "another CA did not sign it");
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in", "server.crt"])
            .current_dir(d)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    }
}
