// The channel page: the key (masked, reveal, copy, reset) and the live panel, which
// follows the channel's WebSocket: a snapshot, then status and statistics events.
"use strict";

(() => {
  const { api, showError, number, duration } = StreamSync;
  const root = document.getElementById("channel");
  const channelId = root.dataset.channelId;
  const $ = (id) => document.getElementById(id);
  const HIDE_AFTER_MS = 30_000; // a revealed key hides itself again
  const CHART_SECONDS = 300;
  const LABELS = { offline: "Offline", live: "Live", reconnecting: "Reconnecting", testing: "Testing" };

  // --- The key -------------------------------------------------------------------------

  const keyBox = $("stream-key");
  const revealButton = $("reveal-key");
  const copyButton = $("copy-key");
  const note = $("key-note");
  let masked = "";
  let hideTimer = 0;

  function showMasked() {
    clearTimeout(hideTimer);
    keyBox.textContent = masked ? masked.replace("…", "••••••••") : "No key: press Reset";
    revealButton.textContent = "Reveal";
    revealButton.setAttribute("aria-pressed", "false");
  }

  function showKey(key, message) {
    clearTimeout(hideTimer);
    keyBox.textContent = key;
    revealButton.textContent = "Hide";
    revealButton.setAttribute("aria-pressed", "true");
    note.textContent = message ?? "";
    hideTimer = setTimeout(() => {
      showMasked();
      note.textContent = "";
    }, HIDE_AFTER_MS);
  }

  async function fetchKey() {
    const revealed = await api("POST", `/api/channels/${channelId}/key/reveal`);
    return revealed.stream_key;
  }

  async function loadChannel() {
    const detail = await api("GET", `/api/channels/${channelId}`);
    $("server-url").textContent = detail.server_url;
    // RTMPS, when the server offers it: the same stream, encrypted on its way here.
    $("secure-server-url").textContent = detail.secure_server_url ?? "";
    for (const row of document.querySelectorAll(".secure-server")) {
      row.hidden = !detail.secure_server_url;
    }
    masked = detail.key.masked ?? "";
    if (revealButton.getAttribute("aria-pressed") !== "true") showMasked(); // not over a reveal
  }

  revealButton.addEventListener("click", async () => {
    if (revealButton.getAttribute("aria-pressed") === "true") {
      showMasked();
      note.textContent = "";
      return;
    }
    try {
      showKey(await fetchKey(), "Hidden again in 30 s.");
      showError("");
    } catch (e) {
      showError(e.message);
    }
  });

  // The Clipboard API needs a secure context (HTTPS or localhost); elsewhere a hidden
  // textarea is selected and copied, so the key is never shown on screen either way.
  async function copyText(textPromise) {
    if (window.isSecureContext && navigator.clipboard) {
      if (typeof ClipboardItem !== "undefined" && navigator.clipboard.write) {
        // The promise keeps the click's user activation valid while the key is fetched.
        const blob = textPromise.then((text) => new Blob([text], { type: "text/plain" }));
        await navigator.clipboard.write([new ClipboardItem({ "text/plain": blob })]);
        return;
      }
      await navigator.clipboard.writeText(await textPromise);
      return;
    }
    const text = await textPromise;
    const area = document.createElement("textarea");
    area.className = "sr-copy";
    area.setAttribute("aria-hidden", "true");
    area.value = text;
    document.body.append(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    if (!copied) throw new Error("Copying is blocked here: reveal the key and copy it by hand.");
  }

  async function copyWithFeedback(button, textPromise) {
    const label = button.textContent;
    try {
      await copyText(textPromise);
      button.textContent = "Copied";
      showError("");
    } catch (e) {
      button.textContent = "Not copied";
      showError(e.message);
    }
    setTimeout(() => { button.textContent = label; }, 2000);
  }

  copyButton.addEventListener("click", () => copyWithFeedback(copyButton, fetchKey()));
  $("copy-server").addEventListener("click", (event) =>
    copyWithFeedback(event.currentTarget, Promise.resolve($("server-url").textContent)));
  $("copy-secure-server").addEventListener("click", (event) =>
    copyWithFeedback(event.currentTarget, Promise.resolve($("secure-server-url").textContent)));

  const dialog = $("reset-dialog");
  $("reset-key").addEventListener("click", () => dialog.showModal());
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "reset") return;
    dialog.returnValue = "";
    try {
      const result = await api("POST", `/api/channels/${channelId}/key/reset`);
      masked = `${result.stream_key.slice(0, 17)}…${result.stream_key.slice(-4)}`;
      showKey(result.stream_key, "New key: paste it into OBS now. The old key no longer works.");
      showError("");
    } catch (e) {
      showError(e.message);
    }
  });

  // --- Live status and health ------------------------------------------------------------

  const badge = document.querySelector('[data-testid="stream-status"]');
  const state = {
    status: "offline", seq: 0, graceUntil: null, startedAt: null, offset: 0, stats: null,
  };
  const points = []; // [epoch seconds, video kbps, audio kbps]

  function serverNow() {
    return Date.now() / 1000 + state.offset;
  }

  function renderStatus() {
    const status = state.status in LABELS ? state.status : "offline";
    let text = LABELS[status];
    if (status === "reconnecting" && state.graceUntil) {
      text += ` · ${Math.max(0, Math.ceil(state.graceUntil - serverNow()))} s`;
    }
    badge.textContent = text;
    badge.dataset.status = status;
    badge.className = `badge ${status}`;
    const onAir = status === "live" || status === "testing" || status === "reconnecting";
    $("uptime").textContent = onAir && state.startedAt ? duration(serverNow() - state.startedAt) : "—";
  }

  const dash = "—";
  const kbps = (value) => (typeof value === "number" ? `${number.format(value)} kbps` : dash);

  function codecText(config, extra) {
    if (!config) return dash;
    const parts = [config.codec_name ?? config.codec];
    if (config.profile_name) parts.push(config.profile_name);
    if (extra) parts.push(extra);
    return parts.join(" · ");
  }

  function renderStats() {
    const m = state.stats?.measurements ?? {};
    const bitrate = m.bitrate_5s ?? m.bitrate_1s;
    $("bitrate").textContent = kbps(bitrate?.total);
    const video = m.video;
    $("resolution").textContent = video?.width ? `${video.width}×${video.height}` : dash;
    $("fps").textContent = typeof m.fps === "number" ? m.fps.toFixed(1) : dash;
    $("keyframe").textContent = typeof m.keyframe_interval === "number"
      ? `${m.keyframe_interval.toFixed(1)} s` : dash;
    $("video-codec").textContent = codecText(video, video?.level ? `level ${video.level}` : null);
    const audio = m.audio;
    const audioExtra = audio?.sample_rate
      ? `${audio.sample_rate / 1000} kHz${audio.channels ? ` · ${audio.channels} ch` : ""}` : null;
    $("audio-codec").textContent = codecText(audio, audioExtra);
    $("encoder").textContent = m.metadata?.encoder ?? dash;

    renderPreview();

    const health = state.stats?.health ?? {};
    const overall = health.overall ?? "no_data";
    const overallBadge = $("health-overall");
    overallBadge.className = `badge ${overall}`;
    overallBadge.textContent = { good: "Good", ok: "OK", bad: "Bad" }[overall] ?? "No data";
    const list = $("health-issues");
    list.replaceChildren(...(health.issues ?? []).map((issue) => {
      const item = document.createElement("li");
      item.dataset.code = issue.code;
      item.className = issue.severity;
      const title = document.createElement("b");
      title.textContent = issue.message;
      const fix = document.createElement("span");
      fix.textContent = issue.fix;
      item.append(title, fix);
      return item;
    }));
  }

  // --- The live picture, and watching the stream ------------------------------------------

  const preview = $("preview");
  const thumbnail = $("thumbnail");
  const player = $("player");
  const watchButton = $("watch");
  const previewNote = $("preview-note");
  const PREVIEW_NOTE = previewNote.textContent;
  let thumbnailAt = null;
  let playback = null; // the mpegts.js player while watching

  function renderPreview() {
    const live = state.status !== "offline";
    preview.hidden = !live;
    if (!live) {
      if (playback) stopWatching();
      thumbnailAt = null;
      thumbnail.hidden = true;
      return;
    }
    const at = state.stats?.thumbnail_at ?? null;
    if (at !== null && at !== thumbnailAt) {
      thumbnailAt = at;
      // A new URL per picture: the browser fetches each picture once.
      thumbnail.src = `/api/channels/${channelId}/thumbnail?at=${at}`;
    }
  }

  thumbnail.hidden = true; // until a picture has loaded
  thumbnail.addEventListener("load", () => { thumbnail.hidden = playback !== null; });
  thumbnail.addEventListener("error", () => { thumbnail.hidden = true; });

  function loadPlayer() {
    if (window.mpegts) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "/static/mpegts.min.js"; // 270 KB: only once someone presses Watch
      script.addEventListener("load", resolve);
      script.addEventListener("error", () => reject(new Error("The player did not load.")));
      document.head.append(script);
    });
  }

  // What browsers play from FLV (the API refuses the rest with 409, saying why).
  const PLAYABLE = { video: ["avc1"], audio: ["mp4a", ".mp3"] };

  function unplayable() {
    const codecs = state.stats?.codecs ?? {};
    for (const [media, allowed] of Object.entries(PLAYABLE)) {
      if (codecs[media] && !allowed.includes(codecs[media])) {
        return `The preview plays H.264 with AAC or MP3; this stream's ${media} is ${codecs[media]}.`;
      }
    }
    return null;
  }

  async function startWatching() {
    const why = unplayable();
    if (why) {
      previewNote.textContent = why;
      return;
    }
    watchButton.disabled = true;
    try {
      await loadPlayer();
    } finally {
      watchButton.disabled = false;
    }
    if (!mpegts.isSupported()) {
      previewNote.textContent = "This browser cannot play the stream (no Media Source Extensions).";
      return;
    }
    mpegts.LoggingControl.applyConfig({ enableVerbose: false, enableDebug: false, enableInfo: false });
    // The API answers with a redirect to a short-lived URL on the node holding the stream.
    playback = mpegts.createPlayer(
      { type: "flv", isLive: true, url: `/api/channels/${channelId}/preview` },
      { enableStashBuffer: false, liveBufferLatencyChasing: true, liveBufferLatencyMaxLatency: 2 },
    );
    playback.on(mpegts.Events.ERROR, () => stopWatching("The stream stopped playing; press Watch live to try again."));
    playback.on(mpegts.Events.LOADING_COMPLETE, () => stopWatching("The stream ended."));
    playback.attachMediaElement(player);
    playback.load();
    player.hidden = false;
    thumbnail.hidden = true;
    watchButton.textContent = "Stop watching";
    watchButton.setAttribute("aria-pressed", "true");
    previewNote.textContent = "Muted; a second or two behind the encoder.";
    Promise.resolve(playback.play()).catch(() => {}); // muted: allowed without a gesture
  }

  function stopWatching(message) {
    if (playback) {
      const stopping = playback;
      playback = null;
      stopping.destroy();
    }
    player.hidden = true;
    thumbnail.hidden = thumbnailAt === null;
    watchButton.textContent = "Watch live";
    watchButton.setAttribute("aria-pressed", "false");
    previewNote.textContent = message ?? PREVIEW_NOTE;
  }

  watchButton.addEventListener("click", () => {
    if (playback) stopWatching();
    else startWatching().catch((e) => { previewNote.textContent = e.message; });
  });

  // --- The chart -------------------------------------------------------------------------

  let chart = null;

  function chartData() {
    const since = serverNow() - CHART_SECONDS;
    while (points.length && points[0][0] < since) points.shift();
    return [
      points.map((p) => p[0]),
      points.map((p) => p[1]),
      points.map((p) => p[2]),
    ];
  }

  function makeChart() {
    const box = $("chart");
    if (typeof uPlot === "undefined") return;
    chart = new uPlot({
      width: box.clientWidth || 300,
      height: 180,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(100, max * 1.15)] } },
      axes: [{}, { size: 56, values: (u, ticks) => ticks.map((t) => number.format(t)) }],
      series: [
        {},
        { label: "Video kbps", stroke: "#2d5bd7", fill: "rgba(45,91,215,0.12)", width: 2, points: { show: false } },
        { label: "Audio kbps", stroke: "#1f7a3a", width: 1.5, points: { show: false } },
      ],
    }, chartData(), box);
    new ResizeObserver(() => chart.setSize({ width: box.clientWidth, height: 180 })).observe(box);
  }

  function addPoint(point) {
    if (!point) return;
    if (points.length && point[0] <= points[points.length - 1][0]) return;
    points.push(point);
    chart?.setData(chartData());
  }

  // --- The socket ------------------------------------------------------------------------

  const socketState = $("socket-state");
  let retryMs = 500;

  function apply(message) {
    if (typeof message.server_time === "number") {
      state.offset = message.server_time - Date.now() / 1000;
    }
    if (message.type === "snapshot") {
      state.status = message.status;
      state.seq = message.seq ?? 0;
      state.graceUntil = message.grace_until;
      state.startedAt = message.started_at;
      state.stats = message.stats;
      points.length = 0;
      for (const point of message.history ?? []) addPoint(point);
      chart?.setData(chartData());
    } else if (message.type === "status") {
      if (message.seq && message.seq <= state.seq) return; // already in the snapshot
      if (message.seq) state.seq = message.seq;
      state.status = message.status;
      state.graceUntil = message.grace_until;
      if (message.status === "offline") state.stats = null;
      if (message.reason === "started") state.startedAt = message.since;
    } else if (message.type === "stats") {
      state.stats = message.stats;
      if (message.stats && !state.startedAt) state.startedAt = serverNow() - message.stats.uptime;
      addPoint(message.point);
    }
    renderStatus();
    renderStats();
    // push_targets.js (and other sections) show their part of the live statistics.
    document.dispatchEvent(new CustomEvent("stream-outputs", {
      detail: state.status === "offline" ? [] : state.stats?.outputs ?? [],
    }));
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/api/channels/${channelId}/live`);
    socket.addEventListener("message", (event) => {
      retryMs = 500;
      socketState.textContent = "";
      apply(JSON.parse(event.data));
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 4401) {
        location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
        return;
      }
      if (event.code === 4404) {
        showError("This channel no longer exists.");
        return;
      }
      socketState.textContent = "Connection lost, reconnecting…";
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 10_000);
    });
  }

  setInterval(renderStatus, 1000); // countdown and uptime tick between events

  makeChart();
  renderStats();
  connect();
  loadChannel().catch((e) => showError(e.message));
})();
