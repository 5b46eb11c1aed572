"use strict";
// The videos come as one JSON blob, and only one page of cards is in the document at a time.
const data = JSON.parse(document.getElementById("gallery-videos").textContent);
const videos = data.videos.map((row) => Object.fromEntries(data.columns.map((name, i) => [
  name,
  data.shared_columns.includes(name) && row[i] !== null ? data.shared[row[i]] : row[i],
])));
const grid = document.getElementById("videos");
const PAGE_SIZE = Number(grid.dataset.pageSize);
const hideFlagged = document.getElementById("hide-flagged");
const topNav = document.querySelector(".pages");
grid.after(topNav.cloneNode(true));
const navs = [...document.querySelectorAll(".pages")];
let page = 0;

// Text goes in as text nodes, never parsed as HTML: prompts and ids are the user's text.
function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

function card(video) {
  // A video with a sound track starts unmuted, its volume in the player's controls.
  const sound = video.audio === "yes";
  const player = element("video", {
    src: video.src, controls: "", loop: "", playsinline: "", preload: "metadata",
    ...(sound ? {} : {muted: ""}),
  });
  player.muted = !sound;  // the attribute mutes only a player parsed from HTML
  const caption = element("figcaption", {},
    element("p", {}, element("b", {}, video.id), " ", video.prompt));
  if (video.negative_prompt) {
    caption.append(element("p", {class: "negative"}, "not: " + video.negative_prompt));
  }
  if (video.score !== null) caption.append(element("p", {class: "params"}, "score " + video.score));
  if (video.flags) caption.append(element("p", {class: "flags"}, "flagged: " + video.flags));
  caption.append(element("p", {class: "params"},
    `${video.width}×${video.height}, ${video.num_frames} frames at ${video.fps} fps, ` +
    `${video.num_inference_steps} steps, guidance ${video.guidance_scale}, seed ${video.seed}` +
    ` · ${video.model}, ` +
    (video.run ? `run of ${video.run}` : "stored by an earlier run") +
    (video.worker ? `, rendered by ${video.worker}` : "")));
  const shown = video.start_image
    ? element("div", {class: "pair"}, element("img", {
      src: video.start_image, alt: "start image of " + video.id, title: "start image",
    }), player)
    : player;
  return element("figure", video.flags ? {id: video.id, class: "flagged"} : {id: video.id},
    shown, caption);
}

function show() {
  const listed = hideFlagged.checked ? videos.filter((video) => !video.flags) : videos;
  const pages = Math.max(1, Math.ceil(listed.length / PAGE_SIZE));
  page = Math.min(Math.max(page, 0), pages - 1);
  const first = page * PAGE_SIZE;
  const cards = listed.slice(first, first + PAGE_SIZE);
  grid.replaceChildren(...cards.map(card));
  for (const nav of navs) {
    nav.querySelector(".page").value = page + 1;
    nav.querySelector(".page").max = pages;
    nav.querySelector(".count").textContent = pages;
    nav.querySelector(".previous").disabled = page === 0;
    nav.querySelector(".next").disabled = page === pages - 1;
    nav.querySelector(".range").textContent = listed.length
      ? `videos ${first + 1}–${first + cards.length} of ${listed.length}`
      : "no videos";
  }
}

for (const nav of navs) {
  nav.querySelector(".previous").addEventListener("click", () => { page -= 1; show(); });
  nav.querySelector(".next").addEventListener("click", () => { page += 1; show(); });
  nav.querySelector(".page").addEventListener("change", (event) => {
    page = Number(event.target.value) - 1 || 0;
    show();
  });
}
hideFlagged.addEventListener("change", () => { page = 0; show(); });
show();
