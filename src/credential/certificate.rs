//! Loading a client certificate and its RSA private key (rule C2): PEM (PKCS#8 or PKCS#1 key,
//! in the certificate's file or separate), PEM with an encrypted PKCS#8 key
//! (`ENCRYPTED PRIVATE KEY`, PBES2) and PKCS#12 (`.pfx` / `.p12`). The encrypted forms go
//! through RustCrypto's `pkcs8` and the `p12-keystore` crate (feature `pkcs12`); nothing here
//! parses ASN.1 by hand.
//!
//! The leaf is the certificate the key belongs to (its RSA public key is embedded verbatim in
//! the certificate); the other certificates, in file order, are the chain sent as `x5c`.
#![cfg(feature = "reqwest")]

use std::path::Path;

use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use secrecy::zeroize::Zeroizing;

use crate::Error;

/// The largest certificate file read.
const MAX_FILE: u64 = 1024 * 1024;

/// A certificate's key and its chain.
pub(crate) struct Loaded {
    pub(crate) key: RsaKeyPair,
    /// DER certificates, the key's own first.
    pub(crate) chain: Vec<Vec<u8>>,
}

impl Loaded {
    /// The DER of the key's own certificate.
    pub(crate) fn leaf(&self) -> &[u8] {
        self.chain.first().map_or(&[], Vec::as_slice)
    }
}

/// Loads `data` (PEM, or PKCS#12 DER) with the key from `key_pem` if given. `password`
/// decrypts an encrypted PEM key or the PKCS#12 file; it is an error for an unencrypted PEM
/// key, as in the Azure SDKs.
pub(crate) fn load(
    data: &[u8],
    key_pem: Option<&[u8]>,
    password: Option<&str>,
) -> Result<Loaded, Error> {
    let trimmed = data.trim_ascii_start();
    if !trimmed.is_empty() && !trimmed.starts_with(b"-----") && trimmed[0] == 0x30 {
        if key_pem.is_some() {
            return Err(Error::config(
                "a PKCS#12 file holds its own key: do not give a separate private key",
            ));
        }
        return load_pkcs12(data, password.unwrap_or(""));
    }
    load_pem(data, key_pem, password)
}

fn load_pem(pem: &[u8], key_pem: Option<&[u8]>, password: Option<&str>) -> Result<Loaded, Error> {
    let blocks =
        ::pem::parse_many(pem).map_err(|_| Error::config("certificate is not valid PEM"))?;
    let key_blocks = match key_pem {
        Some(key_pem) => {
            ::pem::parse_many(key_pem).map_err(|_| Error::config("private key is not valid PEM"))?
        }
        None => Vec::new(),
    };
    let separate_key = key_pem.is_some();
    let mut certificates = Vec::new();
    let mut key = None;
    let all = blocks
        .into_iter()
        .map(|b| (false, b))
        .chain(key_blocks.into_iter().map(|b| (true, b)));
    for (from_key_pem, block) in all {
        let tag = block.tag().to_owned();
        let contents = Zeroizing::new(block.into_contents());
        if tag == "CERTIFICATE" {
            if !from_key_pem {
                certificates.push(contents.to_vec());
            }
        } else if key.is_none() && from_key_pem == separate_key {
            key = parse_key(&tag, &contents, password)?;
        }
    }
    if certificates.is_empty() {
        return Err(Error::config("no CERTIFICATE block in the certificate PEM"));
    }
    let (key, encrypted) =
        key.ok_or_else(|| Error::config("no PRIVATE KEY or RSA PRIVATE KEY block in the PEM"))?;
    if password.is_some() && !encrypted {
        return Err(Error::config(
            "a password was given (AZURE_CLIENT_CERTIFICATE_PASSWORD), but the PEM private key \
             is not encrypted",
        ));
    }
    with_leaf_first(key, certificates)
}

/// The RSA key of a PEM block (and whether it was encrypted), `None` for a block that is not a
/// private key.
fn parse_key(
    tag: &str,
    der: &[u8],
    password: Option<&str>,
) -> Result<Option<(RsaKeyPair, bool)>, Error> {
    let key = match tag {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(der)
            .map_err(|_| Error::config("the PKCS#8 private key is not a usable RSA key"))?,
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(der)
            .map_err(|_| Error::config("the PKCS#1 private key is not a usable RSA key"))?,
        "ENCRYPTED PRIVATE KEY" => {
            let password = password.ok_or_else(|| {
                Error::config(
                    "the private key is encrypted: give its password \
                     (AZURE_CLIENT_CERTIFICATE_PASSWORD, or the builder's password())",
                )
            })?;
            return decrypt_pkcs8(der, password).map(|k| Some((k, true)));
        }
        "EC PRIVATE KEY" => {
            return Err(Error::config(
                "only RSA private keys are supported for client assertions",
            ))
        }
        _ => return Ok(None),
    };
    Ok(Some((key, false)))
}

#[cfg(feature = "pkcs12")]
fn decrypt_pkcs8(der: &[u8], password: &str) -> Result<RsaKeyPair, Error> {
    let encrypted = pkcs8::EncryptedPrivateKeyInfoRef::try_from(der)
        .map_err(|_| Error::config("the encrypted private key is not valid PKCS#8"))?;
    let document = encrypted.decrypt(password).map_err(|_| {
        Error::config(
            "could not decrypt the private key: wrong password, or an encryption scheme other \
             than PBES2 (PBKDF2 or scrypt, AES-CBC)",
        )
    })?;
    RsaKeyPair::from_pkcs8(document.as_bytes())
        .map_err(|_| Error::config("the decrypted private key is not a usable RSA key"))
}

#[cfg(not(feature = "pkcs12"))]
fn decrypt_pkcs8(_der: &[u8], _password: &str) -> Result<RsaKeyPair, Error> {
    Err(Error::config(
        "encrypted private keys need the crate's `pkcs12` feature",
    ))
}

#[cfg(feature = "pkcs12")]
fn load_pkcs12(der: &[u8], password: &str) -> Result<Loaded, Error> {
    let archive = p12_keystore::Pkcs12Archive::from_pkcs12(der, password).map_err(|e| {
        Error::config(match e {
            p12_keystore::error::Error::MacError(_)
            | p12_keystore::error::Error::UnpadError
            | p12_keystore::error::Error::Pkcs5Error(_) => {
                "could not open the PKCS#12 file: wrong password".to_owned()
            }
            other => format!("could not read the PKCS#12 file: {other}"),
        })
    })?;
    let bag = archive
        .keys
        .first()
        .ok_or_else(|| Error::config("the PKCS#12 file holds no private key"))?;
    let key = RsaKeyPair::from_pkcs8(bag.key.as_der())
        .map_err(|_| Error::config("the PKCS#12 private key is not a usable RSA key"))?;
    let certificates = archive
        .certs
        .iter()
        .map(|c| c.cert.as_der().to_vec())
        .collect();
    with_leaf_first(key, certificates)
}

#[cfg(not(feature = "pkcs12"))]
fn load_pkcs12(_der: &[u8], _password: &str) -> Result<Loaded, Error> {
    Err(Error::config(
        "the certificate is not PEM; PKCS#12 (.pfx/.p12) files need the crate's `pkcs12` feature",
    ))
}

/// Orders `certificates` with the key's own first; an error if none is the key's.
fn with_leaf_first(key: RsaKeyPair, mut certificates: Vec<Vec<u8>>) -> Result<Loaded, Error> {
    // The key's RSAPublicKey DER is embedded verbatim in its certificate's
    // SubjectPublicKeyInfo: if no certificate holds it, the key belongs to another one.
    let public = key.public_key().as_ref();
    let leaf = certificates
        .iter()
        .position(|c| !public.is_empty() && c.windows(public.len()).any(|w| w == public))
        .ok_or_else(|| Error::config("the private key does not belong to the certificate"))?;
    let own = certificates.remove(leaf);
    certificates.insert(0, own);
    Ok(Loaded {
        key,
        chain: certificates,
    })
}

/// Reads a certificate file (PEM or PKCS#12) of at most 1 MiB.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let cannot = |e: std::io::Error| {
        Error::config(format!(
            "cannot read the certificate file {}: {e}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut data = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut data)
        .map_err(cannot)?;
    if data.len() as u64 > MAX_FILE {
        return Err(Error::config(format!(
            "the certificate file {} is larger than 1 MiB",
            path.display()
        )));
    }
    Ok(data)
}
