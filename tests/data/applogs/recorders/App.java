import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;

// A service that keeps one JDBC connection and loses it: the lab terminates its backend while it
// is idle. Logged as Spring Boot's default console pattern writes it, with the exception's trace.
public class App {
    static final DateTimeFormatter F = DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSSXXX");

    static void log(String level, String logger, String msg, Throwable t) {
        System.out.printf("%s %5s 4242 --- [nio-8080-exec-3] %-40s : %s%n",
            OffsetDateTime.now(ZoneOffset.UTC).format(F), level, logger, msg);
        if (t != null) t.printStackTrace(System.out);
        System.out.flush();
    }

    static int loadUser(Connection c, int id) {
        try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT " + id)) {
            r.next();
            return r.getInt(1);
        } catch (SQLException e) {
            throw new IllegalStateException("could not load user " + id, e);
        }
    }

    public static void main(String[] args) throws Exception {
        Connection c = DriverManager.getConnection(args[0], args[1], args[2]);
        try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT pg_backend_pid()")) {
            r.next();
            System.err.println("pid " + r.getInt(1));
        }
        new BufferedReader(new InputStreamReader(System.in)).readLine();  // the backend is gone now
        for (int id = 7; id <= 8; id++) {
            try {
                loadUser(c, id);
            } catch (IllegalStateException e) {
                log("ERROR", "c.e.api.UserController", "request failed: GET /users/" + id, e);
            }
        }
    }
}
