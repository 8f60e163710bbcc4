//! `rbdx image …`.

use clap::{Args, Subcommand};
use rbdx_core::Result;
use rbdx_core::ops::{self, CloneOptions, CreateOptions, ImageSpec, Removal, RemoveOptions};
use rbdx_core::rbd::features;
use serde_json::json;

use super::{print_json, spec_arg};
use crate::connection::ConnectArgs;
use crate::size::{human, parse_size};

/// Image subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Create an image (format 2, default features, optional EC data pool).
    Create {
        /// `pool[/namespace]/image`.
        #[arg(value_parser = spec_arg)]
        image: ImageSpec,
        /// Size, e.g. 10G.
        #[arg(long, value_parser = parse_size)]
        size: u64,
        /// Pool for the data objects (an EC pool).
        #[arg(long)]
        data_pool: Option<String>,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Show size, features, data pool, parent and snapshots.
    Info(InfoArgs),
    /// CoW-clone `image@snap` into a new image, with its own data pool.
    Clone {
        /// `pool/image@snap`.
        #[arg(value_parser = spec_arg)]
        parent: ImageSpec,
        /// `pool/image` to create.
        #[arg(value_parser = spec_arg)]
        child: ImageSpec,
        /// Pool for the child's data objects (never inherited from the parent).
        #[arg(long)]
        data_pool: Option<String>,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Copy an image (or a snapshot of it) into a new, independent image.
    Copy {
        /// `pool/image[@snap]`.
        #[arg(value_parser = spec_arg)]
        src: ImageSpec,
        /// `pool/image` to create.
        #[arg(value_parser = spec_arg)]
        dst: ImageSpec,
        /// Pool for the copy's data objects.
        #[arg(long)]
        data_pool: Option<String>,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Copy every block still read from the parent and drop the parent link.
    Flatten {
        /// `pool/image`.
        #[arg(value_parser = spec_arg)]
        image: ImageSpec,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Grow an image (shrinking needs --allow-shrink).
    Resize {
        /// `pool/image`.
        #[arg(value_parser = spec_arg)]
        image: ImageSpec,
        /// New size, e.g. 20G.
        #[arg(long, value_parser = parse_size)]
        size: u64,
        /// Allow a shrink, which loses the data past the new end.
        #[arg(long)]
        allow_shrink: bool,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Rename an image within its pool.
    Rename {
        /// `pool/image`.
        #[arg(value_parser = spec_arg)]
        image: ImageSpec,
        /// New image name.
        new_name: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Remove an image and its snapshots; refused while a client has it open or
    /// while clones depend on it.
    Rm {
        /// `pool/image`.
        #[arg(value_parser = spec_arg)]
        image: ImageSpec,
        /// Move it to the RBD trash for at least this many seconds instead.
        #[arg(long, value_name = "SECS")]
        trash: Option<u64>,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// List the images of a pool.
    Ls {
        /// `pool` or `pool/namespace`.
        pool: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Space allocated to an image itself (from the object map: fast).
    Du {
        /// `pool/image`.
        #[arg(value_parser = spec_arg)]
        image: ImageSpec,
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

/// `rbdx image info` arguments.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// `pool/image[@snap]`.
    #[arg(value_parser = spec_arg)]
    image: ImageSpec,
    /// JSON output.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnectArgs,
}

/// Runs an image subcommand.
pub fn run(cmd: ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Create { image, size, data_pool, conn } => {
            let c = conn.connect()?;
            ops::create(&c, &image, size, &CreateOptions::with_data_pool(data_pool.as_deref()))?;
            println!("created {image} ({})", human(size));
        }
        ImageCommand::Info(args) => info(&args)?,
        ImageCommand::Clone { parent, child, data_pool, conn } => {
            let c = conn.connect()?;
            let opts = CloneOptions { data_pool, ..CloneOptions::default() };
            let format = ops::clone(&c, &parent, &child, &opts)?;
            println!("cloned {parent} to {child} (clone format {format})");
        }
        ImageCommand::Copy { src, dst, data_pool, conn } => {
            let c = conn.connect()?;
            ops::copy(&c, &src, &dst, data_pool.as_deref())?;
            println!("copied {src} to {dst}");
        }
        ImageCommand::Flatten { image, conn } => {
            ops::flatten(&conn.connect()?, &image)?;
            println!("flattened {image}");
        }
        ImageCommand::Resize { image, size, allow_shrink, conn } => {
            ops::resize(&conn.connect()?, &image, size, allow_shrink)?;
            println!("resized {image} to {}", human(size));
        }
        ImageCommand::Rename { image, new_name, conn } => {
            ops::rename(&conn.connect()?, &image, &new_name)?;
            println!("renamed {image} to {new_name}");
        }
        ImageCommand::Rm { image, trash, conn } => {
            let c = conn.connect()?;
            match ops::remove(&c, &image, RemoveOptions { trash_delay: trash })? {
                Removal::Removed => println!("removed {image}"),
                Removal::Trashed { id } => println!("moved {image} to the trash (id {id})"),
                Removal::AlreadyGone => println!("{image} does not exist; nothing to remove"),
            }
        }
        ImageCommand::Ls { pool, json, conn } => {
            let c = conn.connect()?;
            let (p, ns) = pool.split_once('/').unwrap_or((&pool, ""));
            let mut io = c.ioctx(p)?;
            io.set_namespace(ns)?;
            let mut names: Vec<String> = io.list_images()?.into_iter().map(|e| e.name).collect();
            names.sort();
            if json {
                print_json(&json!(names));
            } else {
                names.iter().for_each(|n| println!("{n}"));
            }
        }
        ImageCommand::Du { image, conn } => {
            let c = conn.connect()?;
            let io = ops::ioctx(&c, &image)?;
            let img = io.open_read_only(&image.name, None)?;
            let used = ops::used_bytes(&img, None)?;
            println!("{image}: {} used of {}", human(used), human(img.info()?.size));
        }
    }
    Ok(())
}

fn info(args: &InfoArgs) -> Result<()> {
    let c = args.conn.connect()?;
    let st = ops::stat(&c, &args.image)?;
    let parent = st.parent.as_ref().map(|p| format!("{}@{}", p.image.spec(), p.snap));
    // Image metadata: rbdx's bookkeeping (rbdx.*) and per-image config (conf_*).
    let io = ops::ioctx(&c, &args.image)?;
    let metadata: serde_json::Map<String, serde_json::Value> = io
        .open_read_only(&args.image.name, None)?
        .metadata_list("")?
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    if args.json {
        print_json(&json!({
            "image": args.image.to_string(),
            "id": st.id,
            "size": st.size,
            "object_size": st.object_size,
            "features": features::names(st.features),
            "data_pool": st.data_pool,
            "parent": parent,
            "overlap": st.parent.as_ref().map(|p| p.overlap),
            "snapshots": st.snapshots.iter().map(|s| json!({"id": s.id, "name": s.name, "size": s.size})).collect::<Vec<_>>(),
            "metadata": metadata,
        }));
        return Ok(());
    }
    println!("image:       {}", args.image);
    println!("id:          {}", st.id);
    println!("size:        {} ({} bytes)", human(st.size), st.size);
    println!("object size: {}", human(st.object_size));
    println!("features:    {}", features::names(st.features).join(", "));
    println!("data pool:   {}", st.data_pool.as_deref().unwrap_or("-"));
    match &st.parent {
        Some(p) => println!("parent:      {}@{} (overlap {})", p.image.spec(), p.snap, human(p.overlap)),
        None => println!("parent:      -"),
    }
    let snaps: Vec<&str> = st.snapshots.iter().map(|s| s.name.as_str()).collect();
    println!("snapshots:   {}", if snaps.is_empty() { "-".to_string() } else { snaps.join(", ") });
    for (k, v) in &metadata {
        println!("metadata:    {k} = {}", v.as_str().unwrap_or_default());
    }
    Ok(())
}
