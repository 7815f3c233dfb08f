//! A TLS-only redis-server with a private CA made at test time and an ACL user: the default
//! user is off, client certificates are required, and the user may run only the commands
//! README's "Running with Redis" lists, on keys under `gh-test-*`.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::proc::{Proc, TempDir, free_port, wait_listening};

pub const ACL_USER: &str = "gatehouse";
/// A second user with every right, for the tests' own look at the keys.
const INSPECTOR: &str = "inspector";
/// The ACL user's command list, as README documents it.
pub const ACL_COMMANDS: &str = "-@all +ping +get +set +psetex +del +getdel +exists +sadd +srem \
    +smembers +srandmember +pexpire +eval +evalsha +script|load";

/// A CA and what it signed, as PEM files in a temp dir.
pub struct TestCa {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl TestCa {
    /// A fresh CA named `name`, a server certificate for 127.0.0.1 and localhost, and a
    /// client certificate, all written under `dir`.
    pub fn new(dir: &TempDir, name: &str) -> TestCa {
        let ca_key = KeyPair::generate().unwrap();
        let params = ca_params(name);
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(params, ca_key);
        let leaf = |sans: Vec<String>, purpose: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(sans).unwrap();
            p.distinguished_name
                .push(DnType::CommonName, "gatehouse test");
            p.extended_key_usages = vec![purpose];
            p.use_authority_key_identifier_extension = true;
            (
                p.signed_by(&key, &issuer).unwrap().pem(),
                key.serialize_pem(),
            )
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            vec!["gatehouse".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |file: &str, pem: &str| {
            let path = dir.file(&format!("{name}-{file}"));
            std::fs::write(&path, pem).unwrap();
            path
        };
        TestCa {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }
}

/// The TLS server; stops on drop.
pub struct TlsRedis {
    pub port: u16,
    pub password: String,
    pub ca: TestCa,
    /// Another CA that signed nothing the server shows.
    pub other_ca: TestCa,
    _proc: Proc,
    dir: TempDir,
}

impl TlsRedis {
    pub async fn start() -> TlsRedis {
        let dir = TempDir::new("redis-tls");
        let ca = TestCa::new(&dir, "test-ca");
        let other_ca = TestCa::new(&dir, "other-ca");
        let password = format!("pw-{:x}", rand::random::<u64>());
        let port = free_port();
        let conf = dir.file("redis.conf");
        std::fs::write(
            &conf,
            format!(
                "port 0\ntls-port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {dir}\n\
                 tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n\
                 tls-auth-clients yes\nuser default off\n\
                 user {ACL_USER} on >{password} resetkeys ~gh-test-* resetchannels {ACL_COMMANDS}\n\
                 user {INSPECTOR} on >{password} ~* &* +@all\n",
                dir = dir.path().display(),
                cert = ca.server_cert.display(),
                key = ca.server_key.display(),
                ca = ca.ca.display(),
            ),
        )
        .unwrap();
        let proc = Proc::start(port, &[conf.display().to_string()]);
        wait_listening(port).await;
        TlsRedis {
            port,
            password,
            ca,
            other_ca,
            _proc: proc,
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// `[session]` lines for gatehouse: this server, the ACL user, the CA and client
    /// certificate of `ca`, `password`.
    pub fn session(&self, prefix: &str, ca: &TestCa, password: &str, extra: &str) -> String {
        let pw = self
            .dir
            .file(&format!("password-{:x}", rand::random::<u32>()));
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        format!(
            "store = \"redis\"\nredis_url = \"{url}\"\nredis_prefix = \"{prefix}\"\n\
             redis_username = \"{ACL_USER}\"\nredis_password_file = \"{pw}\"\n\
             redis_ca_file = \"{ca_file}\"\nredis_client_cert_file = \"{cert}\"\n\
             redis_client_key_file = \"{key}\"\n{extra}",
            url = self.url(),
            pw = pw.display(),
            ca_file = ca.ca.display(),
            cert = self.ca.client_cert.display(),
            key = self.ca.client_key.display(),
        )
    }

    /// A connection with every right, to look at what gatehouse stored.
    pub async fn connect(&self) -> redis::aio::MultiplexedConnection {
        let read = |p: &PathBuf| std::fs::read(p).unwrap();
        let certs = redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read(&self.ca.client_cert),
                client_key: read(&self.ca.client_key),
            }),
            root_cert: Some(read(&self.ca.ca)),
        };
        let url = format!(
            "rediss://{INSPECTOR}:{}@127.0.0.1:{}",
            self.password, self.port
        );
        redis::Client::build_with_tls(url.as_str(), certs)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("the TLS redis accepts its own CA's client")
    }
}
