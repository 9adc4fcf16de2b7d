/*
 * The placeholder image of nginx's own error answers (config `placeholder`), for njs 0.7.9.
 *
 * server/deploy/placeholderNginx.ts renders the rest: a `map` of Accept decides whether a
 * request is an image load and which format it gets, a second map holds that format's
 * `{content type} {base64}`, and an error location rewrites an image load to
 * /_imageproxy_placeholder/{status}/{code}, whose js_content is `send`. This file only
 * sends: the status and code of the URI, the bytes of the map, nothing read from disk.
 * Imported only when the option is on; declarations only, so a hit pays nothing for it.
 */

/*
 * js_content: the image with the error's status and X-Imageproxy-Error; nginx adds
 * no-store, Vary and the security headers (add_header ... always). Anything unexpected
 * answers 500 as text at once (r.return with a body skips error_page: no loop).
 */
function send(r) {
    var parts = r.uri.split('/');
    var status = Number(parts[2]);
    var code = parts[3] || '';
    var image = r.variables.imageproxy_placeholder_image || '';
    var space = image.indexOf(' ');
    if (!(status >= 400 && status <= 599) || !/^[a-z_]+$/.test(code) || space < 1) {
        r.headersOut['Content-Type'] = 'text/plain; charset=utf-8';
        r.headersOut['X-Imageproxy-Error'] = 'internal';
        r.return(500, 'internal: internal error\n');
        return;
    }
    r.headersOut['Content-Type'] = image.slice(0, space);
    r.headersOut['X-Imageproxy-Error'] = code;
    r.return(status, Buffer.from(image.slice(space + 1), 'base64'));
}

export default {
    send: send
};
