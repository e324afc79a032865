//! Admin work — listing candidates, existence checks, the lockout pre-check's reads — on
//! connections bound once as the admin and pooled apart from the user-bind connections, so
//! neither kind is ever re-bound as the other.

use std::future::Future;
use std::pin::Pin;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, Scope, SearchEntry};

use super::{first, AdVerifier, DirectoryUser, Server, Unusable};
use crate::auth::AuthError;

/// Idle admin connections kept per server: admin work is light (listing, pre-check reads).
const ADMIN_POOL: usize = 4;

/// Names looked up per search by [`AdVerifier::find_users`] (AD answers at most 1,000
/// entries per unpaged search).
const FIND_CHUNK: usize = 100;

/// What one admin operation on one connection can end in, besides a value.
pub(super) enum OpError {
    /// The connection or server failed: try a new connection or the next server.
    Unusable(Unusable),
    /// The directory's answer (e.g. a refused search): final.
    Directory(AuthError),
}

pub(super) type OpFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, OpError>> + Send + 'c>>;

impl AdVerifier {
    pub(super) fn admin_upn(&self) -> String {
        let admin = self
            .config
            .admin_user
            .clone()
            .unwrap_or_else(|| "Administrator".into());
        self.config.upn(&admin).unwrap_or(admin)
    }

    /// A new connection to `server`, bound as the admin. `Ok(Err(_))`: the directory
    /// refused the admin's credentials (a configuration error, not an outage).
    async fn admin_connect(&self, server: &Server) -> Result<Result<Ldap, AuthError>, String> {
        // A server that cannot be reached (TCP, TLS) is unusable for user binds too; one whose
        // admin bind alone is slow is not (the caller only logs that).
        let mut ldap = match self.connect(server).await {
            Ok(l) => l,
            Err(why) => {
                self.request_failed(server, &format!("admin connection: {why}"));
                return Err(why);
            }
        };
        let r = tokio::time::timeout(
            self.config.timeout,
            ldap.simple_bind(&self.admin_upn(), self.config.admin_password.expose()),
        )
        .await
        .map_err(|_| format!("admin bind on {} timed out", server.addr))?
        .map_err(|e| format!("admin bind on {}: {e}", server.addr))?;
        if r.rc != 0 {
            return Ok(Err(AuthError::Internal(format!(
                "admin bind refused ({}): check admin_user/admin_password",
                r.text
            ))));
        }
        Ok(Ok(ldap))
    }

    fn admin_return(&self, server: &Server, ldap: Ldap) {
        let mut pool = server.admin_pool.lock();
        if pool.len() < ADMIN_POOL {
            pool.push(ldap);
        }
    }

    /// Runs `op` on an admin connection of the first usable server: a pooled one, else (or
    /// when the pooled one turns out closed) a new one; the next server when this one fails.
    pub(super) async fn admin_op<T>(
        &self,
        op: impl for<'c> Fn(&'c mut Ldap) -> OpFuture<'c, T>,
    ) -> Result<T, AuthError> {
        for server in self.order() {
            let pooled = server.admin_pool.lock().pop();
            if let Some(mut ldap) = pooled {
                match op(&mut ldap).await {
                    Ok(v) => {
                        self.admin_return(server, ldap);
                        return Ok(v);
                    }
                    Err(OpError::Directory(e)) => {
                        self.admin_return(server, ldap);
                        return Err(e);
                    }
                    Err(OpError::Unusable(Unusable::TimedOut(why) | Unusable::Declined(why))) => {
                        tracing::warn!(server = server.label, %why, "admin operation failed");
                        continue;
                    }
                    Err(OpError::Unusable(Unusable::Broken(why))) => {
                        tracing::debug!(server = server.label, %why, "pooled admin connection broken");
                    }
                }
            }
            let mut ldap = match self.admin_connect(server).await {
                Ok(Ok(l)) => l,
                Ok(Err(refused)) => return Err(refused),
                Err(why) => {
                    tracing::warn!(server = server.label, %why, "admin connection failed");
                    continue;
                }
            };
            match op(&mut ldap).await {
                Ok(v) => {
                    self.admin_return(server, ldap);
                    return Ok(v);
                }
                Err(OpError::Directory(e)) => return Err(e),
                Err(OpError::Unusable(u)) => {
                    let why = u.into_message();
                    tracing::warn!(server = server.label, %why, "admin operation failed");
                }
            }
        }
        Err(AuthError::DirectoryUnavailable)
    }

    /// The domain's NetBIOS name, which user binds (`NETBIOS\\sam`) need: `netbios_domain`
    /// when configured, else read once from the directory (the domain's crossRef object under
    /// CN=Partitions), since it need not be the domain's first label (`ad.contoso.com` may be
    /// `CONTOSO`). While the directory cannot say, the first label, and it asks again next time.
    pub(super) async fn netbios(&self) -> String {
        if let Some(n) = &self.config.netbios_domain {
            return n.clone();
        }
        // After a failed read, the guess for a minute: no admin searches and warnings per login.
        let recently = |at: &Option<std::time::Instant>| {
            at.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(60))
        };
        let read = self
            .netbios
            .get_or_try_init(|| async {
                // Checked here, under the cell's lock: logins that queued behind a failed
                // read take the guess instead of each trying again.
                if recently(&self.netbios_failed.lock()) {
                    return Err(None);
                }
                match self.read_netbios().await {
                    Ok(name) => {
                        tracing::info!(netbios = %name, "NetBIOS domain name read from the directory");
                        Ok(name)
                    }
                    Err(e) => {
                        *self.netbios_failed.lock() = Some(std::time::Instant::now());
                        Err(Some(e))
                    }
                }
            })
            .await;
        match read {
            Ok(name) => name.clone(),
            Err(failed) => {
                let guess = self.config.netbios();
                if let Some(e) = failed {
                    tracing::warn!(error = %e, %guess, "cannot read the NetBIOS domain name; set netbios_domain");
                }
                guess
            }
        }
    }

    async fn read_netbios(&self) -> Result<String, AuthError> {
        let root = self
            .admin_search(
                "",
                Scope::Base,
                "(objectClass=*)",
                &["configurationNamingContext"],
            )
            .await?;
        let configuration = root
            .first()
            .and_then(|e| first(e, "configurationNamingContext"))
            .ok_or_else(|| AuthError::Internal("the root DSE names no configuration".into()))?;
        let filter = format!(
            "(&(objectClass=crossRef)(nCName={})(nETBIOSName=*))",
            ldap3::ldap_escape(self.config.base_dn())
        );
        let refs = self
            .admin_search(
                &format!("CN=Partitions,{configuration}"),
                Scope::OneLevel,
                &filter,
                &["nETBIOSName"],
            )
            .await?;
        refs.first()
            .and_then(|e| first(e, "nETBIOSName"))
            .map(str::to_owned)
            .ok_or_else(|| {
                AuthError::Internal(format!("no crossRef names {}", self.config.base_dn()))
            })
    }

    /// One unpaged search as the admin (small answers only: one object, a chunk of names).
    pub(super) async fn admin_search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<SearchEntry>, AuthError> {
        let timeout = self.config.timeout;
        let (base, filter) = (base.to_owned(), filter.to_owned());
        let attrs: Vec<String> = attrs.iter().map(|a| (*a).to_owned()).collect();
        self.admin_op(move |ldap| {
            let (base, filter, attrs) = (base.clone(), filter.clone(), attrs.clone());
            Box::pin(async move {
                let res = tokio::time::timeout(timeout, ldap.search(&base, scope, &filter, attrs))
                    .await
                    .map_err(|_| OpError::Unusable(Unusable::TimedOut("search timed out".into())))?
                    .map_err(|e| OpError::Unusable(Unusable::Broken(format!("search: {e}"))))?;
                let (entries, _) = res.success().map_err(|e| {
                    OpError::Directory(AuthError::Internal(format!("directory search: {e}")))
                })?;
                Ok(entries.into_iter().map(SearchEntry::construct).collect())
            })
        })
        .await
    }

    /// Directory users (people), paged so large directories list whole; `only`: the one
    /// with that sAMAccountName (any accepted name form).
    pub async fn list_users(&self, only: Option<&str>) -> Result<Vec<DirectoryUser>, AuthError> {
        let filter = match only {
            Some(name) => format!(
                "(&(objectCategory=person)(objectClass=user)(sAMAccountName={}))",
                ldap3::ldap_escape(self.config.sam(name))
            ),
            None => "(&(objectCategory=person)(objectClass=user))".to_owned(),
        };
        let (base, timeout) = (self.config.base_dn(), self.config.timeout);
        let mut out = self
            .admin_op(move |ldap| {
                let (base, filter) = (base.clone(), filter.clone());
                Box::pin(async move { paged_users(ldap, &base, &filter, timeout).await })
            })
            .await?;
        out.sort_by(|a, b| a.sam_account_name.cmp(&b.sam_account_name));
        Ok(out)
    }

    /// The directory users among `names` (any accepted name form), in searches of
    /// [`FIND_CHUNK`] names; names not in the directory are simply absent from the answer.
    pub async fn find_users(&self, names: &[String]) -> Result<Vec<DirectoryUser>, AuthError> {
        let mut out = Vec::new();
        for chunk in names.chunks(FIND_CHUNK) {
            let any: String = chunk
                .iter()
                .map(|n| {
                    format!(
                        "(sAMAccountName={})",
                        ldap3::ldap_escape(self.config.sam(n))
                    )
                })
                .collect();
            let filter = format!("(&(objectCategory=person)(objectClass=user)(|{any}))");
            let entries = self
                .admin_search(&self.config.base_dn(), Scope::Subtree, &filter, &USER_ATTRS)
                .await?;
            out.extend(entries.iter().filter_map(directory_user));
        }
        Ok(out)
    }
}

const USER_ATTRS: [&str; 4] = [
    "sAMAccountName",
    "userPrincipalName",
    "displayName",
    "userAccountControl",
];

fn directory_user(e: &SearchEntry) -> Option<DirectoryUser> {
    let first = |k: &str| e.attrs.get(k).and_then(|v| v.first()).cloned();
    let sam = first("sAMAccountName")?;
    let uac: u32 = first("userAccountControl")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(DirectoryUser {
        sam_account_name: sam,
        user_principal_name: first("userPrincipalName"),
        display_name: first("displayName"),
        enabled: uac & 2 == 0,
    })
}

/// A paged subtree search for users (200 per page), each page within `timeout`.
async fn paged_users(
    ldap: &mut Ldap,
    base: &str,
    filter: &str,
    timeout: std::time::Duration,
) -> Result<Vec<DirectoryUser>, OpError> {
    let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(200)),
    ];
    let mut stream = tokio::time::timeout(
        timeout,
        ldap.streaming_search_with(adapters, base, Scope::Subtree, filter, USER_ATTRS.to_vec()),
    )
    .await
    .map_err(|_| OpError::Unusable(Unusable::TimedOut("search timed out".into())))?
    .map_err(|e| OpError::Unusable(Unusable::Broken(format!("directory search: {e}"))))?;
    let mut out = Vec::new();
    loop {
        let next = tokio::time::timeout(timeout, stream.next())
            .await
            .map_err(|_| OpError::Unusable(Unusable::TimedOut("search page timed out".into())))?
            .map_err(|e| {
                OpError::Directory(AuthError::Internal(format!("directory search: {e}")))
            })?;
        let Some(entry) = next else { break };
        out.extend(directory_user(&SearchEntry::construct(entry)));
    }
    let _ = stream.finish().await;
    Ok(out)
}
