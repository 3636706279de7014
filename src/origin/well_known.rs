//! The well-known Azure resources and the hosts their tokens are for (rule X5); the sources
//! are listed in the [module docs](super).

use std::fmt;

/// A cloud an entry of [`WELL_KNOWN`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cloud {
    /// The audience is the same in every cloud; its hosts cover all three.
    Every,
    /// Azure public cloud.
    Public,
    /// Azure Government.
    UsGov,
    /// Azure operated by 21Vianet.
    China,
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cloud::Every => "every cloud",
            Cloud::Public => "public cloud",
            Cloud::UsGov => "Azure Government",
            Cloud::China => "Azure China",
        })
    }
}

/// One well-known Azure resource: the host of its scope and the hosts its tokens are for.
#[derive(Debug)]
pub(crate) struct WellKnown {
    /// The service, for the docs and the report.
    pub(crate) service: &'static str,
    /// The cloud (or every cloud).
    pub(crate) cloud: Cloud,
    /// The scope's host (`https://{resource}/.default`).
    pub(crate) resource: &'static str,
    /// Hosts the token goes to besides `resource`; `*.x` is every subdomain of `x`.
    pub(crate) hosts: &'static [&'static str],
}

const STORAGE_HOSTS: &[&str] = &[
    "*.blob.core.windows.net",
    "*.queue.core.windows.net",
    "*.file.core.windows.net",
    "*.dfs.core.windows.net",
    "*.table.core.windows.net",
    "*.blob.core.usgovcloudapi.net",
    "*.queue.core.usgovcloudapi.net",
    "*.file.core.usgovcloudapi.net",
    "*.dfs.core.usgovcloudapi.net",
    "*.table.core.usgovcloudapi.net",
    "*.blob.core.chinacloudapi.cn",
    "*.queue.core.chinacloudapi.cn",
    "*.file.core.chinacloudapi.cn",
    "*.dfs.core.chinacloudapi.cn",
    "*.table.core.chinacloudapi.cn",
];

const SERVICE_BUS_HOSTS: &[&str] = &[
    "*.servicebus.windows.net",
    "*.servicebus.usgovcloudapi.net",
    "*.servicebus.chinacloudapi.cn",
];

/// The well-known Azure resources (see the module docs for the sources).
pub(crate) const WELL_KNOWN: &[WellKnown] = &[
    WellKnown {
        service: "Key Vault",
        cloud: Cloud::Public,
        resource: "vault.azure.net",
        hosts: &["*.vault.azure.net"],
    },
    WellKnown {
        service: "Key Vault",
        cloud: Cloud::UsGov,
        resource: "vault.usgovcloudapi.net",
        hosts: &["*.vault.usgovcloudapi.net"],
    },
    WellKnown {
        service: "Key Vault",
        cloud: Cloud::China,
        resource: "vault.azure.cn",
        hosts: &["*.vault.azure.cn"],
    },
    WellKnown {
        service: "Key Vault Managed HSM",
        cloud: Cloud::Public,
        resource: "managedhsm.azure.net",
        hosts: &["*.managedhsm.azure.net"],
    },
    WellKnown {
        service: "Key Vault Managed HSM",
        cloud: Cloud::UsGov,
        resource: "managedhsm.usgovcloudapi.net",
        hosts: &["*.managedhsm.usgovcloudapi.net"],
    },
    WellKnown {
        service: "Key Vault Managed HSM",
        cloud: Cloud::China,
        resource: "managedhsm.azure.cn",
        hosts: &["*.managedhsm.azure.cn"],
    },
    WellKnown {
        service: "Storage",
        cloud: Cloud::Every,
        resource: "storage.azure.com",
        hosts: STORAGE_HOSTS,
    },
    WellKnown {
        service: "Microsoft Graph",
        cloud: Cloud::Public,
        resource: "graph.microsoft.com",
        hosts: &[],
    },
    WellKnown {
        service: "Microsoft Graph",
        cloud: Cloud::UsGov,
        resource: "graph.microsoft.us",
        hosts: &[],
    },
    WellKnown {
        service: "Microsoft Graph",
        cloud: Cloud::UsGov,
        resource: "dod-graph.microsoft.us",
        hosts: &[],
    },
    WellKnown {
        service: "Microsoft Graph",
        cloud: Cloud::China,
        resource: "microsoftgraph.chinacloudapi.cn",
        hosts: &[],
    },
    WellKnown {
        service: "Resource Manager",
        cloud: Cloud::Public,
        resource: "management.azure.com",
        hosts: &[],
    },
    WellKnown {
        service: "Resource Manager",
        cloud: Cloud::Public,
        resource: "management.core.windows.net",
        hosts: &["management.azure.com"],
    },
    WellKnown {
        service: "Resource Manager",
        cloud: Cloud::UsGov,
        resource: "management.usgovcloudapi.net",
        hosts: &[],
    },
    WellKnown {
        service: "Resource Manager",
        cloud: Cloud::UsGov,
        resource: "management.core.usgovcloudapi.net",
        hosts: &["management.usgovcloudapi.net"],
    },
    WellKnown {
        service: "Resource Manager",
        cloud: Cloud::China,
        resource: "management.chinacloudapi.cn",
        hosts: &[],
    },
    WellKnown {
        service: "Resource Manager",
        cloud: Cloud::China,
        resource: "management.core.chinacloudapi.cn",
        hosts: &["management.chinacloudapi.cn"],
    },
    WellKnown {
        service: "Cosmos DB",
        cloud: Cloud::Every,
        resource: "cosmos.azure.com",
        hosts: &[
            "*.documents.azure.com",
            "*.documents.azure.us",
            "*.documents.azure.cn",
        ],
    },
    WellKnown {
        service: "Service Bus",
        cloud: Cloud::Every,
        resource: "servicebus.azure.net",
        hosts: SERVICE_BUS_HOSTS,
    },
    WellKnown {
        service: "Event Hubs",
        cloud: Cloud::Every,
        resource: "eventhubs.azure.net",
        hosts: SERVICE_BUS_HOSTS,
    },
    WellKnown {
        service: "Cognitive Services / Azure OpenAI",
        cloud: Cloud::Public,
        resource: "cognitiveservices.azure.com",
        hosts: &[
            "*.cognitiveservices.azure.com",
            "*.openai.azure.com",
            "*.services.ai.azure.com",
        ],
    },
    WellKnown {
        service: "Cognitive Services / Azure OpenAI",
        cloud: Cloud::UsGov,
        resource: "cognitiveservices.azure.us",
        hosts: &["*.cognitiveservices.azure.us", "*.openai.azure.us"],
    },
    WellKnown {
        service: "Cognitive Services / Azure OpenAI",
        cloud: Cloud::China,
        resource: "cognitiveservices.azure.cn",
        hosts: &["*.cognitiveservices.azure.cn", "*.openai.azure.cn"],
    },
    WellKnown {
        service: "Azure AI Foundry",
        cloud: Cloud::Public,
        resource: "ai.azure.com",
        hosts: &["*.services.ai.azure.com"],
    },
    WellKnown {
        service: "Azure SQL",
        cloud: Cloud::Public,
        resource: "database.windows.net",
        hosts: &["*.database.windows.net"],
    },
    WellKnown {
        service: "Azure SQL",
        cloud: Cloud::UsGov,
        resource: "database.usgovcloudapi.net",
        hosts: &["*.database.usgovcloudapi.net"],
    },
    WellKnown {
        service: "Azure SQL",
        cloud: Cloud::China,
        resource: "database.chinacloudapi.cn",
        hosts: &["*.database.chinacloudapi.cn"],
    },
];

/// OpenID Connect scopes: they name no resource and are left out of the derivation.
pub(super) const OIDC_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];
