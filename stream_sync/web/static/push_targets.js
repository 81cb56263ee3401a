// The channel page's Multistream section: the channel's push targets, their live state
// (from the statistics channel.js receives) and the form that adds one. A platform's
// stream key goes to the server once and is never shown again, only its last characters.
"use strict";

(() => {
  const { api, showError, number } = StreamSync;
  const channelId = document.getElementById("channel").dataset.channelId;
  const base = `/api/channels/${channelId}/push-targets`;
  const rows = document.getElementById("push-rows");
  const form = document.getElementById("push-form");
  const note = document.getElementById("push-note");
  let targets = [];
  let live = new Map(); // target id -> its state in the latest statistics

  const STATES = {
    connecting: "Connecting", live: "Live", retrying: "Retrying", failed: "Failed",
    waiting: "Waiting for you",
  };

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function fillState(td, target) {
    td.replaceChildren();
    const now = live.get(target.id);
    const badge = document.createElement("span");
    if (!target.enabled) {
      badge.className = "badge offline";
      badge.textContent = "Off";
    } else if (!now) {
      badge.className = "badge offline";
      badge.textContent = "Idle";
      badge.title = "Starts when you go live";
    } else {
      badge.className = `badge ${now.state}`;
      badge.textContent = STATES[now.state] ?? now.state;
      if (now.reason) badge.title = now.reason;
    }
    badge.dataset.state = badge.textContent.toLowerCase();
    td.append(badge);
    if (now?.reason) {
      const why = document.createElement("span");
      why.className = "muted";
      why.textContent = ` ${now.reason}`;
      td.append(why);
    }
  }

  // Once a second: only the state and rate cells change, so focus and typing stay put.
  function renderLive() {
    for (const target of targets) {
      const tr = rows.querySelector(`tr[data-target-id="${target.id}"]`);
      if (!tr) continue;
      const now = live.get(target.id);
      fillState(tr.children[3], target);
      tr.children[4].textContent =
        now && now.state === "live" ? `${number.format(now.kbps)} kbps` : "—";
    }
  }

  function render() {
    rows.replaceChildren();
    if (!targets.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = cell("No destinations yet.", "muted");
      td.colSpan = 7;
      tr.append(td);
      rows.append(tr);
      return;
    }
    for (const target of targets) {
      const tr = document.createElement("tr");
      tr.dataset.targetId = target.id;
      tr.append(cell(target.name), cell(target.url, "text"), cell(target.key_masked, "key"),
        cell(""), cell("—"));
      const toggle = document.createElement("input");
      toggle.type = "checkbox";
      toggle.checked = target.enabled;
      toggle.setAttribute("aria-label", `Send to ${target.name}`);
      toggle.addEventListener("change", () => change(target, { enabled: toggle.checked }));
      const on = document.createElement("td");
      on.append(toggle);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "danger";
      remove.textContent = "Remove";
      remove.addEventListener("click", () => removeTarget(target));
      const last = document.createElement("td");
      last.append(remove);
      tr.append(on, last);
      rows.append(tr);
    }
    renderLive();
  }

  async function load() {
    targets = await api("GET", base);
    render();
  }

  async function change(target, body) {
    try {
      const updated = await api("PATCH", `${base}/${target.id}`, body);
      targets = targets.map((t) => (t.id === updated.id ? updated : t));
      note.textContent = updated.enabled ? `${updated.name} is on.` : `${updated.name} is off.`;
    } catch (e) {
      showError(e.message);
    }
    render();
  }

  async function removeTarget(target) {
    if (!confirm(`Stop sending to ${target.name} and remove it?`)) return;
    try {
      await api("DELETE", `${base}/${target.id}`);
      targets = targets.filter((t) => t.id !== target.id);
      note.textContent = `${target.name} removed.`;
    } catch (e) {
      showError(e.message);
    }
    render();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      const created = await api("POST", base, {
        name: data.get("name"), url: data.get("url"), key: data.get("key"),
      });
      targets.push(created);
      form.reset();
      note.textContent = `${created.name} added.`;
      render();
    } catch (e) {
      note.textContent = e.message;
    }
  });

  document.addEventListener("stream-outputs", (event) => {
    live = new Map(event.detail.filter((o) => o.kind === "push" && o.target_id != null)
      .map((o) => [o.target_id, o]));
    renderLive();
  });

  load().catch((e) => showError(e.message));
})();
