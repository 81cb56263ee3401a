// The channel page's Recordings card: the Record switch, and the channel's recordings
// (newest first, paged) with Download and Delete. Apart from channel.js: it needs
// nothing of the live panel; it refreshes its list every few seconds while visible.
"use strict";

(() => {
  const { api, showError, duration } = StreamSync;
  const root = document.getElementById("channel");
  const $ = (id) => document.getElementById(id);
  if (!root || !$("recordings")) return;
  const channelId = root.dataset.channelId;
  const base = `/api/channels/${channelId}/recordings`;
  const PAGE = 20;
  const REFRESH_MS = 10_000;
  const STATUS = { recording: "Recording", complete: "Complete", failed: "Failed" };

  const recordSwitch = $("record-switch");
  const note = $("record-note");
  const list = $("recordings-list");
  const empty = $("recordings-empty");
  const more = $("recordings-more");
  const dialog = $("delete-recording-dialog");
  let items = []; // loaded so far, newest first
  let older = false; // more beyond the last one loaded
  let deleting = null; // the recording the dialog asks about
  const quietly = (promise) => promise.catch((e) => showError(e.message));

  // --- The switch --------------------------------------------------------------------------

  async function loadSwitch() {
    const detail = await api("GET", `/api/channels/${channelId}`);
    recordSwitch.checked = Boolean(detail.record);
  }

  recordSwitch.addEventListener("change", async () => {
    const on = recordSwitch.checked;
    recordSwitch.disabled = true;
    try {
      await api("PATCH", `/api/channels/${channelId}`, { record: on });
      note.textContent = on
        ? "Recording is on: a live stream is recorded from its next keyframe."
        : "Recording is off. A recording in progress ends now.";
      showError("");
      setTimeout(() => quietly(refresh()), 2000); // a live stream's new recording appears
    } catch (e) {
      recordSwitch.checked = !on;
      showError(e.message);
    } finally {
      recordSwitch.disabled = false;
    }
  });

  // --- The list ----------------------------------------------------------------------------

  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

  function size(bytes) {
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1000 && unit < units.length - 1) {
      value /= 1000;
      unit += 1;
    }
    return unit ? `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}` : `${value} bytes`;
  }

  function cell(...children) {
    const td = document.createElement("td");
    td.append(...children);
    return td;
  }

  function row(item) {
    const tr = document.createElement("tr");
    tr.dataset.recordingId = item.id;
    tr.dataset.status = item.status;
    const started = new Date(item.started_at);
    const time = document.createElement("time");
    time.dateTime = item.started_at;
    time.textContent = dateFormat.format(started);
    const when = [time];
    if (item.part > 1) when.push(` · part ${item.part}`);

    const done = item.status !== "recording";
    const badge = document.createElement("span");
    badge.className = `badge ${item.status}`;
    badge.textContent = STATUS[item.status] ?? item.status;
    const status = [badge];
    if (item.status === "failed" && item.end_reason) {
      const why = document.createElement("span");
      why.className = "muted";
      why.textContent = ` ${item.end_reason}`;
      status.push(why);
    }

    const label = `recording of ${dateFormat.format(started)}`;
    const download = document.createElement("a");
    download.href = item.download_url;
    download.setAttribute("download", item.file_name);
    download.textContent = "Download";
    download.dataset.testid = "download-recording";
    download.setAttribute("aria-label", `Download the ${label}`);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "danger";
    remove.textContent = "Delete";
    remove.disabled = !done; // its node is still writing it
    remove.title = done ? "" : "Being recorded: turn Record off or end the stream first.";
    remove.setAttribute("aria-label", `Delete the ${label}`);
    remove.addEventListener("click", () => {
      deleting = item;
      $("delete-recording-what").textContent = `The ${label} (${size(item.bytes)}).`;
      dialog.showModal();
    });
    const actions = document.createElement("div");
    actions.className = "actions";
    if (done) actions.append(download); // a part being written has no length yet
    actions.append(remove);

    tr.append(
      cell(...when),
      cell(done ? duration(Math.round(item.duration_ms / 1000)) : "—"),
      cell(done ? size(item.bytes) : "—"),
      cell(...status),
      cell(actions),
    );
    return tr;
  }

  function render() {
    list.replaceChildren(...items.map(row));
    empty.hidden = items.length > 0;
    more.hidden = !older;
  }

  async function fetchPage(before, limit) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (before) query.set("before", String(before));
    return api("GET", `${base}?${query}`);
  }

  async function refresh() {
    if (document.visibilityState === "hidden") return;
    const limit = Math.min(200, Math.max(PAGE, items.length));
    const page = await fetchPage(null, limit);
    items = page;
    older = page.length === limit;
    render();
  }

  more.addEventListener("click", async () => {
    try {
      const page = await fetchPage(items.at(-1)?.id, PAGE);
      items = items.concat(page);
      older = page.length === PAGE;
      render();
    } catch (e) {
      showError(e.message);
    }
  });

  dialog.addEventListener("close", async () => {
    const item = deleting;
    deleting = null;
    if (dialog.returnValue !== "delete" || !item) return;
    dialog.returnValue = "";
    try {
      await api("DELETE", `${base}/${item.id}`);
      items = items.filter((other) => other.id !== item.id);
      render();
      showError("");
    } catch (e) {
      showError(e.message);
    }
  });

  setInterval(() => quietly(refresh()), REFRESH_MS);
  document.addEventListener("visibilitychange", () => quietly(refresh()));
  quietly(loadSwitch());
  quietly(refresh());
})();
