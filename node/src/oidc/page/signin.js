// didmesh sign-in page: a small wallet that signs a person in to an OpenID
// relying party. Plain browser JavaScript: no build step, no imports, no
// network access except to the node that served the page (`node_url`).
// signin.html documents the request it reads, the data-testids, and the
// recovery-word encoding.
//
// Needs a secure context (HTTPS, or http://localhost): browsers offer
// WebCrypto and WebAuthn nowhere else.
"use strict";

(() => {
  // --- Encodings -------------------------------------------------------------

  const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
  const textEncoder = new TextEncoder();
  const utf8 = (s) => textEncoder.encode(s);

  // base58btc (the Bitcoin alphabet), as the Rust `bs58` crate writes it:
  // the bytes as one big-endian number in base 58, one '1' per leading zero byte.
  function base58btc(bytes) {
    const digits = []; // base-58 digits, least significant first
    for (const byte of bytes) {
      let carry = byte;
      for (let i = 0; i < digits.length; i++) {
        carry += digits[i] * 256;
        digits[i] = carry % 58;
        carry = Math.floor(carry / 58);
      }
      while (carry > 0) {
        digits.push(carry % 58);
        carry = Math.floor(carry / 58);
      }
    }
    let zeros = 0;
    while (zeros < bytes.length && bytes[zeros] === 0) zeros++;
    return "1".repeat(zeros) + digits.reverse().map((d) => B58[d]).join("");
  }

  // base64url without padding (RFC 4648 §5), the form every didmesh field uses.
  function b64url(buf) {
    const bytes = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function fromB64url(s) {
    if (typeof s !== "string" || !/^[A-Za-z0-9_-]*$/.test(s)) throw new Error("not base64url");
    const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  }

  // Ed25519 public key as didmesh and did:key write it: 'z' + base58btc of the
  // multicodec ed25519-pub (0xed 0x01) + the 32 key bytes (did-core keys.rs).
  function multibaseEd25519(pub) {
    if (pub.length !== 32) throw new Error("an Ed25519 public key is 32 bytes");
    return "z" + base58btc(concat([0xed, 0x01], pub));
  }

  // P-256 public key as a Multikey: 'z' + base58btc of the multicodec
  // p256-pub (0x1200, varint 0x80 0x24) + the 33-byte compressed SEC1 point
  // (did-core passkey.rs). `point` is the uncompressed 0x04 ‖ X ‖ Y.
  function multibaseP256(point) {
    if (point.length !== 65 || point[0] !== 0x04) throw new Error("not an uncompressed P-256 point");
    const prefix = point[64] & 1 ? 0x03 : 0x02; // SEC1 §2.3.3: parity of Y
    return "z" + base58btc(concat([0x80, 0x24, prefix], point.subarray(1, 33)));
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  // Canonical JSON, RFC 8785 for the subset didmesh ops use (did-core
  // encoding.rs): objects with members sorted by key, arrays, strings,
  // integers, booleans, null, no whitespace. JSON.stringify of a string is
  // exactly RFC 8785 §3.2.2.2's escaping, and Array.prototype.sort compares
  // UTF-16 code units, which is §3.2.3's order.
  function canonicalJson(value) {
    if (value === null) return "null";
    switch (typeof value) {
      case "boolean":
        return value ? "true" : "false";
      case "number":
        if (!Number.isSafeInteger(value)) throw new Error("only integers may appear in an op");
        return String(value);
      case "string":
        return JSON.stringify(value);
      case "object":
        if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
        return (
          "{" +
          Object.keys(value)
            .filter((k) => value[k] !== undefined)
            .sort()
            .map((k) => JSON.stringify(k) + ":" + canonicalJson(value[k]))
            .join(",") +
          "}"
        );
      default:
        throw new Error("cannot encode a " + typeof value);
    }
  }

  // --- Recovery words ----------------------------------------------------------
  // The PGP word list (Juola and Zimmermann, 1995), lower-cased: byte i of the
  // seed is word number `byte` of the even list when i is even, of the odd list
  // when i is odd. Each line below is 16 byte values (0x00-0x0f, 0x10-0x1f, ...).
  const PGP_EVEN = `
  aardvark absurd accrue acme adrift adult afflict ahead aimless algol allow alone ammo ancient apple artist
  assume athens atlas aztec baboon backfield backward banjo beaming bedlamp beehive beeswax befriend belfast berserk billiard
  bison blackjack blockade blowtorch bluebird bombast bookshelf brackish breadline breakup brickyard briefcase burbank button buzzard cement
  chairlift chatter checkup chisel choking chopper christmas clamshell classic classroom cleanup clockwork cobra commence concert cowbell
  crackdown cranky crowfoot crucial crumpled crusade cubic dashboard deadbolt deckhand dogsled dragnet drainage dreadful drifter dropper
  drumbeat drunken dupont dwelling eating edict egghead eightball endorse endow enlist erase escape exceed eyeglass eyetooth
  facial fallout flagpole flatfoot flytrap fracture framework freedom frighten gazelle geiger glitter glucose goggles goldfish gremlin
  guidance hamlet highchair hockey indoors indulge inverse involve island jawbone keyboard kickoff kiwi klaxon locale lockup
  merit minnow miser mohawk mural music necklace neptune newborn nightbird oakland obtuse offload optic orca payday
  peachy pheasant physique playhouse pluto preclude prefer preshrunk printer prowler pupil puppy python quadrant quiver quota
  ragtime ratchet rebirth reform regain reindeer rematch repay retouch revenge reward rhythm ribcage ringbolt robust rocker
  ruffled sailboat sawdust scallion scenic scorecard scotland seabird select sentence shadow shamrock showgirl skullcap skydive slingshot
  slowdown snapline snapshot snowcap snowslide solo southward soybean spaniel spearhead spellbind spheroid spigot spindle spyglass stagehand
  stagnate stairway standard stapler steamship sterling stockman stopwatch stormy sugar surmount suspense sweatband swelter tactics talon
  tapeworm tempest tiger tissue tonic topmost tracker transit trauma treadmill trojan trouble tumor tunnel tycoon uncut
  unearth unwind uproot upset upshot vapor village virus vulcan waffle wallet watchword wayside willow woodlark zulu
  `.trim().split(/\s+/);
  const PGP_ODD = `
  adroitness adviser aftermath aggregate alkali almighty amulet amusement antenna applicant apollo armistice article asteroid atlantic atmosphere
  autopsy babylon backwater barbecue belowground bifocals bodyguard bookseller borderline bottomless bradbury bravado brazilian breakaway burlington businessman
  butterfat camelot candidate cannonball capricorn caravan caretaker celebrate cellulose certify chambermaid cherokee chicago clergyman coherence combustion
  commando company component concurrent confidence conformist congregate consensus consulting corporate corrosion councilman crossover crucifix cumbersome customer
  dakota decadence december decimal designing detector detergent determine dictator dinosaur direction disable disbelief disruptive distortion document
  embezzle enchanting enrollment enterprise equation equipment escapade eskimo everyday examine existence exodus fascinate filament finicky forever
  fortitude frequency gadgetry galveston getaway glossary gossamer graduate gravity guitarist hamburger hamilton handiwork hazardous headwaters hemisphere
  hesitate hideaway holiness hurricane hydraulic impartial impetus inception indigo inertia infancy inferno informant insincere insurgent integrate
  intention inventive istanbul jamaica jupiter leprosy letterhead liberty maritime matchmaker maverick medusa megaton microscope microwave midsummer
  millionaire miracle misnomer molasses molecule montana monument mosquito narrative nebula newsletter norwegian october ohio onlooker opulent
  orlando outfielder pacific pandemic pandora paperweight paragon paragraph paramount passenger pedigree pegasus penetrate perceptive performance pharmacy
  phonetic photograph pioneer pocketful politeness positive potato processor provincial proximate puberty publisher pyramid quantity racketeer rebellion
  recipe recover repellent replica reproduce resistor responsive retraction retrieval retrospect revenue revival revolver sandalwood sardonic saturday
  savagery scavenger sensation sociable souvenir specialist speculate stethoscope stupendous supportive surrender suspicious sympathy tambourine telephone therapist
  tobacco tolerance tomorrow torpedo tradition travesty trombonist truncated typewriter ultimate undaunted underfoot unicorn unify universe unravel
  upcoming vacancy vagabond vertigo virginia visitor vocalist voyager warranty waterloo whimsical wichita wilmington wyoming yesteryear yucatan
  `.trim().split(/\s+/);

  function seedToWords(seed) {
    return Array.from(seed, (b, i) => (i % 2 === 0 ? PGP_EVEN : PGP_ODD)[b]);
  }

  function wordsToSeed(words) {
    return Uint8Array.from(words, (w, i) => {
      const b = (i % 2 === 0 ? PGP_EVEN : PGP_ODD).indexOf(String(w).toLowerCase());
      if (b < 0) throw new Error(`word ${i + 1} (${w}) is not in the ${i % 2 === 0 ? "even" : "odd"} list`);
      return b;
    });
  }

  // --- Keys and ops ------------------------------------------------------------

  const ED25519 = { name: "Ed25519" };
  // PKCS#8 PrivateKeyInfo for an Ed25519 seed (RFC 8410 §7): a fixed 16-byte
  // header, then the 32-byte seed.
  const PKCS8_ED25519 = Uint8Array.from([
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
  ]);

  function noEd25519(err) {
    return new Error(
      "This browser cannot make Ed25519 keys (WebCrypto Ed25519 arrived in Chrome 137, " +
        `Firefox 129 and Safari 17): ${err.message || err}`,
    );
  }

  // The public key of a recovery seed. The seed is imported (extractable, so
  // that its public half can be read as a JWK) and the key object dropped.
  async function ed25519PublicOfSeed(seed) {
    let key;
    try {
      key = await crypto.subtle.importKey("pkcs8", concat(PKCS8_ED25519, seed), ED25519, true, ["sign"]);
    } catch (err) {
      throw noEd25519(err);
    }
    const jwk = await crypto.subtle.exportKey("jwk", key);
    return fromB64url(jwk.x);
  }

  // A browser key: non-extractable, so script on this origin can use it but
  // nothing can read it out (WebCrypto §14.3.8).
  async function newBrowserKey() {
    try {
      return await crypto.subtle.generateKey(ED25519, false, ["sign", "verify"]);
    } catch (err) {
      throw noEd25519(err);
    }
  }

  async function signEd25519(privateKey, bytes) {
    return b64url(await crypto.subtle.sign(ED25519, privateKey, bytes));
  }

  // An op signed as did-core op.rs signs it: Ed25519 over the canonical JSON
  // of every field but `sig`, the signature in base64url.
  async function signOp(body, privateKey) {
    const sig = await signEd25519(privateKey, utf8(canonicalJson(body)));
    return { ...body, sig };
  }

  const nowSecs = () => Math.floor(Date.now() / 1000);

  // --- Browser storage -----------------------------------------------------------
  // One IndexedDB database per origin; one record per DID made here:
  // {did, network_id, public_key_multibase, private_key (CryptoKey), state,
  // head, created_at}. A CryptoKey survives structured cloning with its
  // non-extractable flag.

  function openDb() {
    return new Promise((resolve, reject) => {
      const req = indexedDB.open("didmesh", 1);
      req.onupgradeneeded = () => req.result.createObjectStore("dids", { keyPath: "did" });
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }

  async function withStore(mode, fn) {
    const db = await openDb();
    try {
      return await new Promise((resolve, reject) => {
        const tx = db.transaction("dids", mode);
        const req = fn(tx.objectStore("dids"));
        tx.oncomplete = () => resolve(req.result);
        tx.onerror = () => reject(tx.error);
        tx.onabort = () => reject(tx.error);
      });
    } finally {
      db.close();
    }
  }

  const saveRecord = (rec) => withStore("readwrite", (s) => s.put(rec));
  const loadRecords = () => withStore("readonly", (s) => s.getAll());

  // The DID to sign in with: the login_hint's if this browser holds it, else
  // the newest one made for this network.
  async function pickRecord(cfg) {
    const mine = (await loadRecords()).filter((r) => r.network_id === cfg.network_id);
    const hinted = mine.find((r) => r.did === cfg.login_hint);
    return hinted || mine.sort((a, b) => b.created_at - a.created_at)[0] || null;
  }

  // --- The request the node put in the page ------------------------------------

  const STRING_FIELDS = [
    "request", "client_id", "client_name", "redirect_uri", "node_url", "node_name",
    "rp_id", "network_id", "cancel_url",
  ];

  // A provider name as nodes configure it (node/src/federation/config.rs;
  // did-core federation.rs MAX_PROVIDER_NAME).
  const PROVIDER_NAME = /^[a-z0-9_-]{1,32}$/;

  function httpUrl(s) {
    try {
      const u = new URL(s);
      return u.protocol === "https:" || u.protocol === "http:";
    } catch (_) {
      return false;
    }
  }

  function readRequest() {
    const el = document.getElementById("didmesh-request");
    if (!el) throw new Error("This page carries no sign-in request. Start again from the app.");
    let cfg;
    try {
      cfg = JSON.parse(el.textContent);
    } catch (_) {
      throw new Error("This page's sign-in request is unreadable. Start again from the app.");
    }
    if (cfg === null || typeof cfg !== "object") throw new Error("This page's sign-in request is unreadable.");
    for (const f of STRING_FIELDS) {
      if (typeof cfg[f] !== "string" || cfg[f] === "") throw new Error(`The sign-in request lacks ${f}.`);
    }
    if (cfg.login_hint !== undefined && cfg.login_hint !== null && typeof cfg.login_hint !== "string") {
      throw new Error("The sign-in request's login_hint is not a string.");
    }
    for (const f of ["redirect_uri", "node_url", "cancel_url"]) {
      if (!httpUrl(cfg[f])) throw new Error(`The sign-in request's ${f} is not an http(s) URL.`);
    }
    cfg.node_url = cfg.node_url.replace(/\/+$/, "");
    // External providers (issue 10): optional; an entry that is not what a
    // node configures is left out rather than shown.
    if (cfg.providers !== undefined && cfg.providers !== null && !Array.isArray(cfg.providers)) {
      throw new Error("The sign-in request's providers is not a list.");
    }
    cfg.providers = (cfg.providers || []).filter(
      (p) => p && typeof p.name === "string" && PROVIDER_NAME.test(p.name) &&
        typeof p.display_name === "string" && p.display_name !== "",
    );
    for (const f of ["fed", "fed_provider"]) {
      if (cfg[f] === undefined || cfg[f] === "") cfg[f] = null;
      if (cfg[f] !== null && typeof cfg[f] !== "string") throw new Error(`The sign-in request's ${f} is not a string.`);
    }
    return Object.freeze(cfg);
  }

  // --- Talking to the node ---------------------------------------------------------

  // A failure the node explained: its `{error, reason}` body.
  // `credentials` is "omit" but for a call that must show the node a cookie
  // it set for this browser on its own origin ("same-origin").
  async function callNode(cfg, method, path, body, credentials = "omit") {
    let res;
    try {
      res = await fetch(cfg.node_url + path, {
        method,
        headers: body === undefined ? {} : { "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials,
        cache: "no-store",
      });
    } catch (err) {
      throw new Error(`Could not reach the node at ${cfg.node_url}: ${err.message}`);
    }
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      // not JSON: reported below with the status
    }
    if (!res.ok) {
      const code = (data && data.error) || `HTTP ${res.status}`;
      const reason = (data && data.reason) || res.statusText || "no reason given";
      throw new Error(`${reason} (${code})`);
    }
    if (data === null || typeof data !== "object") throw new Error(`The node answered ${path} with no JSON object.`);
    return data;
  }

  // --- WebAuthn ------------------------------------------------------------------------

  function assertionJson(cred) {
    const r = cred.response;
    const out = {
      credential_id: b64url(cred.rawId),
      authenticator_data: b64url(r.authenticatorData),
      client_data_json: b64url(r.clientDataJSON),
      signature: b64url(r.signature),
    };
    if (r.userHandle && r.userHandle.byteLength > 0) out.user_handle = b64url(r.userHandle);
    return out;
  }

  function passkeyError(err) {
    // NotAllowedError covers "cancelled", "timed out" and "no passkey for this
    // site" alike (WebAuthn §13.4.7 keeps them indistinguishable on purpose).
    if (err && err.name === "NotAllowedError") {
      return new Error("No passkey was used: it was cancelled, timed out, or this device holds no passkey for this site.");
    }
    return new Error(`Passkey failed: ${(err && err.message) || err}`);
  }

  // --- The page ---------------------------------------------------------------------------

  const el = (id) => document.querySelector(`[data-testid="${id}"]`);
  const ACTIONS = [
    "create-passkey", "signin-passkey", "create-browser-key", "signin-browser-key", "start-approve", "create-and-link",
  ];

  function page(cfg) {
    let pollTimer = null;

    const status = (text) => {
      el("status").textContent = text;
    };
    const showError = (err) => {
      const box = el("error");
      box.textContent = err ? String(err.message || err) : "";
      box.hidden = !err;
    };
    const setBusy = (busy) => {
      for (const id of ACTIONS) el(id).disabled = busy || el(id).dataset.unavailable === "1";
      for (const p of cfg.providers) el(`continue-with-${p.name}`).disabled = busy;
      el("did-input").disabled = busy;
    };
    const stopPolling = () => {
      if (pollTimer !== null) clearTimeout(pollTimer);
      pollTimer = null;
    };

    // Leaves for the app, only to the redirect URI this page showed.
    const follow = (redirect) => {
      const ok =
        typeof redirect === "string" &&
        (redirect.startsWith(cfg.redirect_uri + "?") || redirect.startsWith(cfg.redirect_uri + "&"));
      if (!ok) throw new Error("The node answered with a redirect to somewhere other than the app's address.");
      status(`Signed in. Returning to ${cfg.client_name}…`);
      window.location.assign(redirect);
    };

    // Runs one user action: one at a time, every failure shown with its reason.
    const action = (fn) => async () => {
      stopPolling();
      showError(null);
      setBusy(true);
      try {
        await fn();
      } catch (err) {
        status("");
        showError(err);
        setBusy(false);
      }
    };

    // Shows the 32 recovery words once and waits for `continue`.
    const showRecoveryWords = (seed) =>
      new Promise((resolve) => {
        const section = el("recovery");
        const list = el("recovery-words");
        list.replaceChildren(
          ...seedToWords(seed).map((w) => {
            const li = document.createElement("li");
            li.textContent = w;
            return li;
          }),
        );
        section.hidden = false;
        el("recovery-heading").focus();
        el("continue").addEventListener(
          "click",
          () => {
            list.replaceChildren(); // shown once: gone from the page after this
            section.hidden = true;
            resolve();
          },
          { once: true },
        );
      });

    // A new DID: recovery key (priority 0) and browser key as rotation keys,
    // the browser key for authentication; the create op signed by the browser key.
    async function createDid() {
      const keys = await newBrowserKey();
      const browserMb = multibaseEd25519(new Uint8Array(await crypto.subtle.exportKey("raw", keys.publicKey)));
      const seed = crypto.getRandomValues(new Uint8Array(32));
      const recoveryMb = multibaseEd25519(await ed25519PublicOfSeed(seed));
      status("Write down your recovery words.");
      await showRecoveryWords(seed);
      seed.fill(0);
      const state = {
        rotation_keys: [recoveryMb, browserMb],
        verification_methods: [{ id: "browser-1", public_key_multibase: browserMb, relationships: ["authentication"] }],
        services: [],
        also_known_as: [],
      };
      status("Registering your DID…");
      const op = await signOp(
        { type: "create", did: null, prev: null, state, created_at: nowSecs(), signer: browserMb },
        keys.privateKey,
      );
      const done = await callNode(cfg, "POST", "/v1/ops", op);
      if (typeof done.did !== "string" || typeof done.cid !== "string") throw new Error("The node did not name the new DID.");
      const rec = {
        did: done.did,
        network_id: cfg.network_id,
        public_key_multibase: browserMb,
        private_key: keys.privateKey,
        state,
        head: done.cid,
        created_at: Date.now(),
      };
      await saveRecord(rec);
      showBrowserDid(rec.did);
      return rec;
    }

    async function signInWithBrowserKey(rec) {
      status(`Signing in as ${rec.did}…`);
      const ch = await callNode(cfg, "POST", "/oidc/signin/challenge", { request: cfg.request, did: rec.did });
      const signature = await signEd25519(rec.private_key, utf8(String(ch.message)));
      const done = await callNode(cfg, "POST", "/oidc/signin/complete", {
        request: cfg.request,
        nonce: ch.nonce,
        did: rec.did,
        signature,
      });
      follow(done.redirect);
    }

    // The passkey challenge is SHA-256 of the login message (did-core
    // passkey.rs `challenge_for`), computed here so the passkey signs for the
    // message this page holds.
    async function webauthnChallenge(ch) {
      const challenge = new Uint8Array(await crypto.subtle.digest("SHA-256", utf8(String(ch.message))));
      if (ch.webauthn_challenge !== undefined && ch.webauthn_challenge !== b64url(challenge)) {
        throw new Error("The node's passkey challenge does not match its login message.");
      }
      return challenge;
    }

    async function signInWithPasskey(did, credentialId) {
      status("Use your passkey…");
      const ch = await callNode(
        cfg,
        "POST",
        "/oidc/signin/challenge",
        did ? { request: cfg.request, did } : { request: cfg.request, passkey: true },
      );
      const publicKey = {
        challenge: await webauthnChallenge(ch),
        rpId: cfg.rp_id,
        // Empty: the authenticator offers its passkeys for this site and the
        // DID comes back as the user handle ("usernameless").
        allowCredentials: credentialId ? [{ type: "public-key", id: fromB64url(credentialId) }] : [],
        userVerification: "preferred",
      };
      let cred;
      try {
        cred = await navigator.credentials.get({ publicKey });
      } catch (err) {
        throw passkeyError(err);
      }
      if (!cred) throw passkeyError(null);
      const body = { request: cfg.request, nonce: ch.nonce, assertion: assertionJson(cred) };
      if (did) body.did = did;
      status("Checking your passkey…");
      const done = await callNode(cfg, "POST", "/oidc/signin/complete", body);
      follow(done.redirect);
    }

    async function newPasskey(did) {
      status("Create your passkey…");
      let cred;
      try {
        cred = await navigator.credentials.create({
          publicKey: {
            rp: { id: cfg.rp_id, name: "didmesh" },
            user: { id: utf8(did), name: did, displayName: "didmesh" },
            challenge: crypto.getRandomValues(new Uint8Array(32)),
            pubKeyCredParams: [{ type: "public-key", alg: -7 }], // ES256
            authenticatorSelection: { residentKey: "required", requireResidentKey: true, userVerification: "preferred" },
            attestation: "none",
          },
        });
      } catch (err) {
        throw passkeyError(err);
      }
      if (!cred) throw passkeyError(null);
      const r = cred.response;
      if (typeof r.getPublicKey !== "function" || r.getPublicKeyAlgorithm() !== -7) {
        throw new Error("The authenticator did not make an ES256 (P-256) passkey.");
      }
      // SPKI DER of a P-256 key ends with the 65-byte uncompressed point.
      const spki = new Uint8Array(r.getPublicKey());
      return { credential_id: b64url(cred.rawId), public_key_multibase: multibaseP256(spki.subarray(spki.length - 65)) };
    }

    // Adds a passkey to a DID made here: an update op signed by the browser key.
    async function addPasskey(rec, passkey) {
      const state = { ...rec.state, passkeys: [{ id: "passkey-1", ...passkey }] };
      status("Adding the passkey to your DID…");
      const op = await signOp(
        { type: "update", did: rec.did, prev: rec.head, state, created_at: nowSecs(), signer: rec.public_key_multibase },
        rec.private_key,
      );
      const done = await callNode(cfg, "POST", "/v1/ops", op);
      await saveRecord({ ...rec, state, head: done.cid });
    }

    // --- External providers (issue 10) ---

    const displayName = (name) => (cfg.providers.find((p) => p.name === name) || {}).display_name || name;

    // "Continue with NAME": a top-level navigation to this node, which sets
    // the cookie that binds the provider's answer to this browser and sends
    // the browser on to the provider; the provider's answer comes back to
    // this node (node/src/federation/routes.rs).
    const continueWith = (name) => () => {
      stopPolling();
      showError(null);
      setBusy(true);
      status(`Going to ${displayName(name)}…`);
      window.location.assign(
        `${cfg.node_url}/federation/${encodeURIComponent(name)}/start?request=${encodeURIComponent(cfg.request)}`,
      );
    };

    // A link entry id: the provider's name, or NAME-1, NAME-2, … when taken
    // (ids are 1-32 of [A-Za-z0-9_-], unique among the DID's links).
    function linkId(name, links) {
      const taken = new Set(links.map((l) => l.id));
      if (!taken.has(name)) return name;
      for (let i = 1; ; i++) {
        const suffix = `-${i}`;
        const id = name.slice(0, 32 - suffix.length) + suffix;
        if (!taken.has(id)) return id;
      }
    }

    // The attestation the node answered, as a FedLink (did-core
    // federation.rs: exactly these fields; the node refuses others).
    function linkEntry(att, id) {
      if (!att || typeof att !== "object") throw new Error("The node answered with no attestation.");
      for (const f of ["provider", "commitment", "attested_by", "attestation"]) {
        if (typeof att[f] !== "string" || att[f] === "") throw new Error(`The node's attestation lacks ${f}.`);
      }
      if (!Number.isSafeInteger(att.attested_at)) throw new Error("The node's attestation lacks attested_at.");
      if (att.provider !== cfg.fed_provider) throw new Error("The node attested an account at another provider.");
      return {
        id,
        provider: att.provider,
        commitment: att.commitment,
        attested_by: att.attested_by,
        attested_at: att.attested_at,
        attestation: att.attestation,
      };
    }

    // Create and link, in steps that a retry does not repeat: a DID made
    // here stays this offer's DID, and an attestation once given (the node
    // gives one per handle) is kept until the link op is accepted.
    const linking = { rec: null, link: null };
    async function createAndLink() {
      if (!linking.rec) linking.rec = await createDid();
      const rec = linking.rec;
      const name = cfg.fed_provider;
      if (!linking.link) {
        status(`Linking your ${displayName(name)} account to ${rec.did}…`);
        // same-origin: the not-linked page sent the browser here, to the
        // node's own origin, and a node that binds the offer to the browser
        // that signed in at the provider reads that binding from a cookie.
        const att = await callNode(cfg, "POST", "/federation/attest", { fed: cfg.fed, did: rec.did }, "same-origin");
        linking.link = linkEntry(att.link, linkId(name, rec.state.links || []));
      }
      if (!(rec.state.links || []).some((l) => l.commitment === linking.link.commitment)) {
        const state = { ...rec.state, links: [...(rec.state.links || []), linking.link] };
        const op = await signOp(
          { type: "update", did: rec.did, prev: rec.head, state, created_at: nowSecs(), signer: rec.public_key_multibase },
          rec.private_key,
        );
        const done = await callNode(cfg, "POST", "/v1/ops", op);
        if (typeof done.cid !== "string") throw new Error("The node did not accept the link.");
        linking.rec = { ...rec, state, head: done.cid };
        await saveRecord(linking.rec);
      }
      await signInWithBrowserKey(linking.rec);
    }

    function showFederation() {
      const box = el("providers");
      box.replaceChildren(
        ...cfg.providers.map((p) => {
          const b = document.createElement("button");
          b.type = "button";
          b.dataset.testid = `continue-with-${p.name}`;
          b.textContent = `Continue with ${p.display_name}`;
          b.addEventListener("click", continueWith(p.name));
          return b;
        }),
      );
      el("federation").hidden = cfg.providers.length === 0;
      if (cfg.fed === null) return;
      if (cfg.fed_provider === null) {
        showError(
          "The offer to link your account at a provider is unknown, used or expired (it lasts 10 minutes). " +
            "Continue with your provider again.",
        );
        return;
      }
      const display = displayName(cfg.fed_provider);
      el("fed-explanation").textContent =
        `Your account at ${display} is not linked to a DID yet. Create a DID in this browser and link it?`;
      el("fed-link-command").textContent = `didmesh link --via ${cfg.fed_provider} --node ${cfg.node_url}`;
      el("fed-offer").hidden = false;
    }

    function showBrowserDid(did) {
      const out = el("browser-did");
      out.textContent = did ? `This browser holds ${did}.` : "This browser holds no DID yet.";
    }

    async function startApprove() {
      const did = el("did-input").value.trim();
      if (!did.startsWith("did:")) throw new Error("Enter your DID (did:mesh:…) first.");
      const p = await callNode(cfg, "POST", "/oidc/signin/pending", { request: cfg.request, did });
      el("approve-code").textContent = p.code;
      el("approve-command").textContent = `didmesh approve ${p.code} --node ${cfg.node_url}`;
      el("approve").hidden = false;
      el("approve-heading").focus();
      status("Waiting for your approval from the command line…");
      const url = `/oidc/signin/pending/${encodeURIComponent(p.pending_id)}`;
      const poll = async () => {
        pollTimer = null;
        try {
          const s = await callNode(cfg, "GET", url);
          if (s.status === "approved") return follow(s.redirect);
          if (s.status === "expired") throw new Error("The code expired before it was approved. Start again.");
          pollTimer = setTimeout(poll, 1000);
        } catch (err) {
          el("approve").hidden = true;
          status("");
          showError(err);
          setBusy(false);
        }
      };
      pollTimer = setTimeout(poll, 1000);
      // Other ways to sign in stay open; starting one stops the waiting.
      setBusy(false);
    }

    // Wire up.
    el("client-name").textContent = cfg.client_name;
    el("redirect-target").textContent = cfg.redirect_uri;
    el("node-name").textContent = `${cfg.node_name} (${cfg.node_url})`;
    if (cfg.login_hint) el("did-input").value = cfg.login_hint;
    el("cancel").addEventListener("click", () => {
      stopPolling();
      window.location.assign(cfg.cancel_url);
    });

    el("create-browser-key").addEventListener("click", action(async () => signInWithBrowserKey(await createDid())));
    el("signin-browser-key").addEventListener(
      "click",
      action(async () => {
        const rec = await pickRecord(cfg);
        if (!rec) throw new Error("This browser holds no key for this network. Create one first.");
        await signInWithBrowserKey(rec);
      }),
    );
    el("create-passkey").addEventListener(
      "click",
      action(async () => {
        const rec = await createDid();
        const passkey = await newPasskey(rec.did);
        await addPasskey(rec, passkey);
        await signInWithPasskey(rec.did, passkey.credential_id);
      }),
    );
    el("signin-passkey").addEventListener("click", action(() => signInWithPasskey(null, null)));
    el("create-and-link").addEventListener("click", action(createAndLink));
    el("start-approve").addEventListener("click", action(startApprove));
    el("approve-form").addEventListener("submit", (e) => e.preventDefault());

    showFederation();

    if (!window.isSecureContext || !window.crypto || !crypto.subtle) {
      for (const id of ["create-passkey", "signin-passkey", "create-browser-key", "signin-browser-key", "create-and-link"]) {
        el(id).dataset.unavailable = "1";
      }
      showError(
        "This page must be served over HTTPS (or from localhost): browsers offer keys and passkeys " +
          "only to secure pages. You can still approve from the command line" +
          (cfg.providers.length ? " or continue with a provider." : "."),
      );
    } else if (!window.PublicKeyCredential) {
      for (const id of ["create-passkey", "signin-passkey"]) el(id).dataset.unavailable = "1";
    }
    setBusy(false);
    if (window.indexedDB && window.isSecureContext) {
      pickRecord(cfg).then((r) => showBrowserDid(r && r.did), () => showBrowserDid(null));
    }
    el("main").hidden = false;
    if (!el("fed-offer").hidden) el("fed-offer-heading").focus(); // what this visit is about
  }

  // Pure helpers, for tests and the curious (no keys, no state).
  window.didmeshSignin = Object.freeze({
    canonicalJson,
    base58btc,
    b64url,
    fromB64url,
    multibaseEd25519,
    multibaseP256,
    seedToWords,
    wordsToSeed,
    ed25519PublicOfSeed,
    PKCS8_ED25519,
  });

  function start() {
    let cfg;
    try {
      cfg = readRequest();
    } catch (err) {
      // Refuse to do anything: no request, no buttons.
      el("main").hidden = true;
      const box = el("error");
      box.textContent = err.message;
      box.hidden = false;
      return;
    }
    page(cfg);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
