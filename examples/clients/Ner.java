// Entities from nertron's text model (nertron_text) on a Triton server, for JVM jobs: Java 17, the JDK only
// (java.net.http, no JSON library). Run it with Java's single-file source launcher, no build:
//
//   java examples/clients/Ner.java --url 127.0.0.1:8000 "Angela Merkel visited Paris." "text two"
//   java examples/clients/Ner.java --url 127.0.0.1:8000 < texts.txt          (no TEXT: stdin, one text a line)
//
// Options: --aggregation first|average|max (default first), --min-score S (0..1: leave out entities scored
// below S), --fingerprint FP (the served model refuses the request unless it serves the bundle with this
// fingerprint, Bundle.fingerprint in Python, the config parameter nertron_fingerprint that
// `nertron repository` writes: so a job knows which model answers), --batch N (texts per request, default 32;
// the server's max_batch_size is 64 unless the repository was written with another).
//
// stdout: per text, in order, one line: the JSON array of its entities exactly as the server returns it,
// [{"text", "label", "start", "end", "score"}, ...], start/end in code points (String.codePointCount, not
// char indices); parse it with your own JSON library. Exit 0; 1 on bad arguments; 2 when the server fails
// a request (its error on one line on stderr) or cannot be reached. Non-ASCII texts as arguments need a
// UTF-8 locale (the JVM decodes argv with it); stdin is read as UTF-8 always.
//
// Scala (or Kotlin) jobs: call the same code, e.g. copy the class next to the job and use
// Ner.entities(client, uri, texts, parameters) from a mapPartitions, one HttpClient per partition; or
// write the same POST with java.net.http from Scala. The request is KServe v2 (Triton's HTTP/REST API):
//   POST /v2/models/nertron_text/infer
//   {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [n, 1], "data": ["text", ...]}],
//    "parameters": {"aggregation": "first", "min_score": 0.5, "nertron_fingerprint": "..."}}
// and the reply's output ENTITIES holds n JSON strings, one per text.

import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

public final class Ner {

    /** The server failed a request (an HTTP error status: its message) or could not be reached. */
    public static final class ServerError extends Exception {
        public ServerError(String message) {
            super(message);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "127.0.0.1:8000";
        int batch = 32;
        Map<String, Object> parameters = new LinkedHashMap<>();
        parameters.put("aggregation", "first");
        List<String> texts = new ArrayList<>();
        try {
            for (int i = 0; i < args.length; i++) {
                String arg = args[i];
                switch (arg) {
                    case "--url" -> url = value(args, ++i, arg);
                    case "--aggregation" -> parameters.put("aggregation", value(args, ++i, arg));
                    case "--fingerprint" -> parameters.put("nertron_fingerprint", value(args, ++i, arg));
                    case "--min-score" -> {
                        double score = Double.parseDouble(value(args, ++i, arg));
                        if (!(score >= 0 && score <= 1)) throw new IllegalArgumentException("--min-score must be in [0, 1]");
                        parameters.put("min_score", score);
                    }
                    case "--batch" -> {
                        batch = Integer.parseInt(value(args, ++i, arg));
                        if (batch < 1) throw new IllegalArgumentException("--batch must be >= 1");
                    }
                    case "--" -> texts.addAll(List.of(args).subList(i + 1, args.length));
                    default -> {
                        if (arg.startsWith("--")) throw new IllegalArgumentException("unknown option " + arg);
                        texts.add(arg);
                    }
                }
                if (arg.equals("--")) break;
            }
        } catch (IllegalArgumentException error) { // NumberFormatException too
            System.err.println("Ner.java: " + error.getMessage());
            System.err.println("usage: java Ner.java [--url HOST:PORT] [--aggregation A] [--min-score S]"
                    + " [--fingerprint FP] [--batch N] [TEXT ...]");
            System.exit(1);
        }
        if (texts.isEmpty()) {
            var stdin = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            texts.addAll(stdin.lines().toList());
        }
        URI uri = URI.create((url.contains("://") ? url : "http://" + url).replaceAll("/+$", "")
                + "/v2/models/nertron_text/infer");
        var out = new PrintStream(new FileOutputStream(FileDescriptor.out), false, StandardCharsets.UTF_8);
        HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        try {
            for (int start = 0; start < texts.size(); start += batch) {
                var chunk = texts.subList(start, Math.min(start + batch, texts.size()));
                for (String entities : entities(client, uri, chunk, parameters)) out.println(entities);
            }
        } catch (ServerError error) {
            out.flush();
            System.err.println("Ner.java: " + error.getMessage().replaceAll("\\s*\\R\\s*", " "));
            System.exit(2);
        }
        out.flush();
    }

    /**
     * One request: per text, the JSON array of its entities as the server returns it. {@code parameters}: any
     * of "aggregation" (String), "min_score" (Number), "nertron_fingerprint" (String).
     */
    public static List<String> entities(HttpClient client, URI uri, List<String> texts, Map<String, ?> parameters)
            throws ServerError, InterruptedException {
        var body = new StringBuilder("{\"inputs\":[{\"name\":\"TEXT\",\"datatype\":\"BYTES\",\"shape\":[")
                .append(texts.size()).append(",1],\"data\":[");
        for (int i = 0; i < texts.size(); i++) quote(body.append(i == 0 ? "" : ","), texts.get(i));
        body.append("]}],\"parameters\":{");
        int n = 0;
        for (var parameter : parameters.entrySet()) {
            quote(body.append(n++ == 0 ? "" : ","), parameter.getKey()).append(':');
            if (parameter.getValue() instanceof Number number) body.append(number);
            else quote(body, String.valueOf(parameter.getValue()));
        }
        body.append("}}");
        var request = HttpRequest.newBuilder(uri)
                .header("Content-Type", "application/json")
                .timeout(Duration.ofMinutes(2))
                .POST(HttpRequest.BodyPublishers.ofString(body.toString(), StandardCharsets.UTF_8))
                .build();
        HttpResponse<String> response;
        try {
            response = client.send(request, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        } catch (IOException error) {
            throw new ServerError("cannot reach " + uri + ": " + error);
        }
        Object reply;
        try {
            reply = new Json(response.body()).document();
        } catch (IllegalArgumentException error) {
            reply = null;
        }
        if (response.statusCode() != 200) {
            Object message = reply instanceof Map<?, ?> map ? map.get("error") : null;
            throw new ServerError("HTTP " + response.statusCode() + ": " + (message != null ? message : response.body()));
        }
        if (reply instanceof Map<?, ?> map && map.get("outputs") instanceof List<?> outputs) {
            for (Object output : outputs) {
                if (output instanceof Map<?, ?> tensor && "ENTITIES".equals(tensor.get("name"))
                        && tensor.get("data") instanceof List<?> data && data.size() == texts.size()) {
                    List<String> found = new ArrayList<>();
                    for (Object value : data) found.add((String) value);
                    return found;
                }
            }
        }
        throw new ServerError("no ENTITIES output of " + texts.size() + " rows in the reply: " + response.body());
    }

    private static String value(String[] args, int i, String option) {
        if (i >= args.length) throw new IllegalArgumentException(option + " needs a value");
        return args[i];
    }

    /** Appends {@code s} as a JSON string. */
    static StringBuilder quote(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
                    else out.append(c);
                }
            }
        }
        return out.append('"');
    }

    /** A minimal JSON reader: objects as Map, arrays as List, strings, numbers as Double, booleans, null. */
    static final class Json {
        private final String s;
        private int i;

        Json(String s) {
            this.s = s;
        }

        Object document() {
            Object value = value();
            space();
            if (i != s.length()) throw error("trailing characters");
            return value;
        }

        private Object value() {
            space();
            if (i >= s.length()) throw error("unexpected end");
            char c = s.charAt(i);
            if (c == '{') {
                Map<String, Object> map = new LinkedHashMap<>();
                i++;
                space();
                if (peek('}')) return map;
                do {
                    space();
                    String key = string();
                    space();
                    expect(':');
                    map.put(key, value());
                    space();
                } while (peek(','));
                expect('}');
                return map;
            }
            if (c == '[') {
                List<Object> list = new ArrayList<>();
                i++;
                space();
                if (peek(']')) return list;
                do {
                    list.add(value());
                    space();
                } while (peek(','));
                expect(']');
                return list;
            }
            if (c == '"') return string();
            for (String word : new String[] {"true", "false", "null"}) {
                if (s.startsWith(word, i)) {
                    i += word.length();
                    return word.equals("null") ? null : Boolean.valueOf(word);
                }
            }
            int start = i;
            while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) i++;
            if (start == i) throw error("unexpected character");
            try {
                return Double.valueOf(s.substring(start, i));
            } catch (NumberFormatException e) {
                throw error("bad number");
            }
        }

        private String string() {
            expect('"');
            var out = new StringBuilder();
            while (true) {
                if (i >= s.length()) throw error("unterminated string");
                char c = s.charAt(i++);
                if (c == '"') return out.toString();
                if (c != '\\') {
                    out.append(c);
                    continue;
                }
                if (i >= s.length()) throw error("unterminated string");
                char e = s.charAt(i++);
                switch (e) {
                    case '"', '\\', '/' -> out.append(e);
                    case 'b' -> out.append('\b');
                    case 'f' -> out.append('\f');
                    case 'n' -> out.append('\n');
                    case 'r' -> out.append('\r');
                    case 't' -> out.append('\t');
                    case 'u' -> { // a UTF-16 unit; surrogate pairs come as two, and join in the StringBuilder
                        if (i + 4 > s.length()) throw error("bad \\u escape");
                        try {
                            out.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
                        } catch (NumberFormatException x) {
                            throw error("bad \\u escape");
                        }
                        i += 4;
                    }
                    default -> throw error("bad escape");
                }
            }
        }

        private void space() {
            while (i < s.length() && " \t\r\n".indexOf(s.charAt(i)) >= 0) i++;
        }

        private boolean peek(char c) {
            if (i < s.length() && s.charAt(i) == c) {
                i++;
                return true;
            }
            return false;
        }

        private void expect(char c) {
            if (!peek(c)) throw error("expected '" + c + "'");
        }

        private IllegalArgumentException error(String what) {
            return new IllegalArgumentException("JSON: " + what + " at " + i);
        }
    }
}
