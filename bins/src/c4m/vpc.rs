//! `c4m vpc`: create, list and delete VPCs (`c4m.io/v1` `Vpc` objects).

use anyhow::{Result, bail};
use c4m_core::{Vpc, parse_vpc_cidr};
use clap::{Args, Subcommand};

use crate::commands::Connection;
use crate::output::{self, Format};

/// `c4m vpc`.
#[derive(Args)]
pub(crate) struct VpcArgs {
    #[command(subcommand)]
    command: VpcCommand,
}

#[derive(Subcommand)]
enum VpcCommand {
    /// Create a VPC: instances in it reach each other and no other VPC's.
    Create {
        /// Its name (what a Microservice's spec.vpc says).
        #[arg(long)]
        name: String,
        /// Its IPv4 range; each node serves a /24 of it.
        #[arg(long)]
        cidr: String,
    },
    /// List VPCs.
    List {
        /// table, json or yaml.
        #[arg(short, long, default_value = "table")]
        output: Format,
    },
    /// Delete VPCs; refused while a Microservice or instance uses one. A VPC
    /// already gone counts as deleted.
    Delete {
        /// VPC names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub(crate) async fn vpc(args: VpcArgs, connection: &Connection) -> Result<()> {
    let client = connection.client()?;
    let kind = crate::commands::kind("vpcs")?;
    match args.command {
        VpcCommand::Create { name, cidr } => {
            // The server checks too (and for overlaps); this names the flag.
            parse_vpc_cidr(&cidr).map_err(|reason| anyhow::anyhow!("--cidr: {reason}"))?;
            let object = serde_json::to_value(Vpc::new(&name, &cidr))?;
            client.create(kind, None, &object).await?;
            println!("vpc/{name} created ({cidr})");
        }
        VpcCommand::List { output } => {
            let list = client.list(kind, None, None).await?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            match output {
                Format::Table => print!("{}", output::table(kind, &items, false)),
                other => print!("{}", output::document(&list, other)?),
            }
        }
        VpcCommand::Delete { names } => {
            let mut failed = 0;
            for name in &names {
                match client.delete(kind, None, name).await {
                    Ok(_) => println!("vpc/{name} deleted"),
                    Err(e) if e.code() == Some(404) => println!("vpc/{name} already gone"),
                    Err(e) => {
                        eprintln!("error: vpc/{name}: {e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {} VPCs not deleted", names.len());
            }
        }
    }
    Ok(())
}
