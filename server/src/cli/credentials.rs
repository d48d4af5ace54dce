//! `onramp admin credential-policy | issuer | certificate`: certificates issued at provisioning
//! from the terminal, through the same admin service (rules and audit) as the API and console.

use onramp::domain::admin::{PolicyInput, issued_view, issuer_view, policy_view};
use onramp::model::KeyType;
use serde_json::json;

use super::{
    CertificateCommand, Config, CredentialPolicyCommand, IssuerCommand, cli_actor, print_json,
    read_file,
};

pub async fn policy(config: Config, command: CredentialPolicyCommand) -> anyhow::Result<()> {
    let prepared = onramp::service::prepare(config).await?;
    let (store, admin) = (prepared.state.store.as_ref(), &prepared.state.admin);
    match command {
        CredentialPolicyCommand::List => {
            let policies = store.list_credential_policies().await?;
            print_json(&json!(policies.iter().map(policy_view).collect::<Vec<_>>()));
        }
        CredentialPolicyCommand::Set {
            name,
            issuer,
            validity_days,
            key_types,
            renewal_window_days,
        } => {
            let input = PolicyInput {
                issuer,
                validity_days,
                key_types: parse_key_types(&key_types)?,
                renewal_window_days,
            };
            let policy = admin
                .put_credential_policy(&cli_actor(), &name, input)
                .await?;
            print_json(&policy_view(&policy));
        }
        CredentialPolicyCommand::Delete { name } => {
            admin.delete_credential_policy(&cli_actor(), &name).await?
        }
    }
    store.close().await;
    Ok(())
}

fn parse_key_types(names: &[String]) -> anyhow::Result<Vec<KeyType>> {
    names
        .iter()
        .map(|name| {
            KeyType::parse(name).ok_or_else(|| {
                let known: Vec<&str> = KeyType::ALL.iter().map(|k| k.as_str()).collect();
                anyhow::anyhow!("--key-types: {name:?} is not one of {}", known.join(", "))
            })
        })
        .collect()
}

pub async fn issuer(config: Config, command: IssuerCommand) -> anyhow::Result<()> {
    let prepared = onramp::service::prepare(config).await?;
    let (store, admin) = (prepared.state.store.as_ref(), &prepared.state.admin);
    match command {
        IssuerCommand::List => {
            let issuers = store.list_issuers().await?;
            print_json(&json!(issuers.iter().map(issuer_view).collect::<Vec<_>>()));
        }
        IssuerCommand::Add { name, chain, key } => {
            let (chain, key) = (read_file(&chain)?, read_file(&key)?);
            let issuer = admin.put_issuer(&cli_actor(), &name, &chain, &key).await?;
            print_json(&issuer_view(&issuer));
        }
        IssuerCommand::Remove { name } => admin.delete_issuer(&cli_actor(), &name).await?,
    }
    store.close().await;
    Ok(())
}

pub async fn certificate(config: Config, command: CertificateCommand) -> anyhow::Result<()> {
    let prepared = onramp::service::prepare(config).await?;
    let (store, admin) = (prepared.state.store.as_ref(), &prepared.state.admin);
    let issued = match command {
        CertificateCommand::List { registration_id } => {
            store.issued_certificates(&registration_id).await?
        }
        CertificateCommand::Revoke {
            registration_id,
            serial,
        } => {
            admin
                .revoke_certificates(&cli_actor(), &registration_id, serial.as_deref())
                .await?
        }
    };
    print_json(&json!(issued.iter().map(issued_view).collect::<Vec<_>>()));
    store.close().await;
    Ok(())
}
